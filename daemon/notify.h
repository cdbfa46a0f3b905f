/*
 * notify — systemd service notification (sd_notify(3) from libsystemd). Every call is a no-op
 * when NOTIFY_SOCKET is unset, so parleyd runs the same outside systemd.
 */
#ifndef PARLEY_NOTIFY_H
#define PARLEY_NOTIFY_H

#include <stdint.h>

void notify_ready(const char *status);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void notify_reloading(void);
void notify_stopping(const char *status);
void notify_watchdog(void);
/* Socket activation: the listening socket systemd passed under name (FileDescriptorName= in
 * parleyd.socket; an unnamed single socket counts as "http"), or -1 when none. The fd is
 * made close-on-exec. */
int notify_listen_fd(const char *name);

/* The watchdog interval systemd expects pings within (WatchdogSec=), 0 if none. */
uint64_t notify_watchdog_usec(void);

#endif
