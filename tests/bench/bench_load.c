/* parleyd under load; see bench_load.h. */
#include "bench_load.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/figure.h"
#include "testd.h"
#include "localhost.h"

void bench_load_run(int quick)
{
    char exe[PATH_MAX];
    if (localhost_sibling("parley", exe, sizeof exe) != 0) {
        printf("  load: no parley next to parley-bench (make builds it)\n");
        return;
    }
    int p[2];
    if (pipe(p) != 0) {
        printf("  load: pipe failed\n");
        return;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        char *argv[] = { exe, "load", "--figures", quick ? "--quick" : NULL, NULL };
        execv(exe, argv);
        _exit(127);
    }
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        char name[256], unit[64];
        double v;
        if (sscanf(line, "FIGURE %255s %lf %63s", name, &v, unit) == 3)
            figure_emit(name, v, unit, 0); /* prints the line itself */
        else
            fputs(line, stdout); /* headings and notes */
    }
    if (f)
        fclose(f);
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        printf("  load: parley load failed (exit %d)\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}
