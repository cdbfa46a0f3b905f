/*
 * replay — runs a libFuzzer target's entry point over every file of its corpus directories,
 * without libFuzzer, so `make test` replays the corpora under the sanitizers with gcc.
 *
 *   build/san/fuzz-replay/gguf_fuzz tests/fuzz/corpus/gguf
 *
 * Each input is copied to a buffer of exactly its size, so a read past the end is caught.
 * Exit status 1 when a directory cannot be read or holds no file.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *data = malloc(n ? n : 1);
    if (!data || fread(data, 1, n, f) != n) {
        free(data);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(data, n);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    int status = 0;
    for (int i = 1; i < argc; i++) {
        DIR *dir = opendir(argv[i]);
        if (!dir) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            status = 1;
            continue;
        }
        int count = 0;
        struct dirent *de;
        while ((de = readdir(dir))) {
            char path[4096];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", argv[i], de->d_name);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (replay_file(path) != 0) {
                fprintf(stderr, "replay: cannot read %s\n", path);
                status = 1;
            }
            count++;
        }
        closedir(dir);
        printf("replayed %d inputs from %s\n", count, argv[i]);
        if (count == 0)
            status = 1;
    }
    return status;
}
