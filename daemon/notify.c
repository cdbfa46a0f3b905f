/* notify — see notify.h. */
#include "notify.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

void notify_ready(const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void notify_status(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", buf);
}

void notify_reloading(void)
{
    /* MONOTONIC_USEC lets Type=notify-reload (systemd >= 253) match the reload; older
     * versions ignore it */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading configuration",
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void notify_stopping(const char *status)
{
    sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}

void notify_watchdog(void)
{
    sd_notify(0, "WATCHDOG=1");
}

uint64_t notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

int notify_listen_fd(const char *name)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(0, &names);
    int fd = -1;
    for (int i = 0; i < n; i++) {
        const char *have = names && names[i] ? names[i] : "unknown";
        /* systemd names an unnamed socket "unknown" (or the socket unit's name) */
        if (!strcmp(have, name) || (n == 1 && !strcmp(name, "http") && strcmp(have, "ws") != 0))
            fd = SD_LISTEN_FDS_START + i;
    }
    if (names) {
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
    }
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}
