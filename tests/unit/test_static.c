/*
 * Tests of proto/http/static: URL -> file resolution (index, traversal, hidden files, symbolic
 * links out of the root, directories), Content-Types, and real requests over loopback to a
 * libmicrohttpd daemon that serves through static_serve (200 with type and body, HEAD, 304 on
 * a matching ETag, 404 for traversal, encoded traversal and missing files).
 */
#include <arpa/inet.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/static.h"
#include "test.h"

static void static_write(const char *dir, const char *name, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* root/: index.html, app.js, lib/x.css, lib/index.html, .secret; outside.txt next to root;
 * root/link -> ../outside.txt. Returns the root in buf. */
static const char *static_tree(char *buf, size_t cap)
{
    const char *dir = test_tmpdir();
    char p[PATH_MAX];
    snprintf(buf, cap, "%s/root", dir);
    mkdir(buf, 0755);
    snprintf(p, sizeof p, "%s/lib", buf);
    mkdir(p, 0755);
    static_write(buf, "index.html", "<!doctype html><title>t</title>");
    static_write(buf, "app.js", "export const x = 1;\n");
    static_write(buf, "lib/x.css", "body{}");
    static_write(buf, "lib/index.html", "lib index");
    static_write(buf, ".secret", "no");
    static_write(dir, "outside.txt", "outside");
    snprintf(p, sizeof p, "%s/link", buf);
    unlink(p);
    if (symlink("../outside.txt", p))
        test_fail(__FILE__, __LINE__, "symlink failed");
    return buf;
}

static int static_ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

TEST(static_resolve_paths)
{
    char root[PATH_MAX], path[STATIC_PATH_MAX];
    static_tree(root, sizeof root);
    REQUIRE(static_resolve(root, "/", path, sizeof path) == 0);
    CHECK(static_ends_with(path, "/root/index.html"));
    REQUIRE(static_resolve(root, "/app.js", path, sizeof path) == 0);
    CHECK(static_ends_with(path, "/root/app.js"));
    CHECK(static_resolve(root, "/lib/x.css", path, sizeof path) == 0);
    CHECK(static_resolve(root, "/lib/", path, sizeof path) == 0);
    CHECK(static_ends_with(path, "/lib/index.html"));
    CHECK(static_resolve(root, "//app.js", path, sizeof path) == -1); /* empty segment */
    CHECK(static_resolve(root, "/lib", path, sizeof path) == -1);     /* a directory */
    CHECK(static_resolve(root, "/missing.js", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/../outside.txt", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/lib/../app.js", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/./app.js", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/..", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/.secret", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/lib\\..\\..\\outside.txt", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/app.js\n", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/link", path, sizeof path) == -1);  /* symlink out of the root */
    CHECK(static_resolve(root, "app.js", path, sizeof path) == -1); /* not absolute */
    CHECK(static_resolve("", "/app.js", path, sizeof path) == -1);
    CHECK(static_resolve("/nonexistent-root-dir", "/", path, sizeof path) == -1);
    CHECK(static_resolve(root, "/app.js", path, 8) == -1); /* does not fit */
    char longurl[STATIC_PATH_MAX + 16];
    memset(longurl, 'a', sizeof longurl - 1);
    longurl[0] = '/';
    longurl[sizeof longurl - 1] = '\0';
    CHECK(static_resolve(root, longurl, path, sizeof path) == -1);
}

TEST(static_mime_types)
{
    CHECK(!strcmp(static_mime("/x/index.html"), "text/html; charset=utf-8"));
    CHECK(!strcmp(static_mime("app.js"), "text/javascript; charset=utf-8"));
    CHECK(!strcmp(static_mime("a/capture-worklet.JS"), "text/javascript; charset=utf-8"));
    CHECK(!strcmp(static_mime("style.css"), "text/css; charset=utf-8"));
    CHECK(!strcmp(static_mime("m.wasm"), "application/wasm"));
    CHECK(!strcmp(static_mime("noext"), "application/octet-stream"));
    CHECK(!strcmp(static_mime("dir.d/noext"), "application/octet-stream"));
    CHECK(!strcmp(static_mime("trailing."), "application/octet-stream"));
}

static enum MHD_Result static_test_handler(void *cls, struct MHD_Connection *c, const char *url,
                                           const char *method, const char *version,
                                           const char *upload, size_t *upload_size, void **state)
{
    int st = static_serve(c, cls, method, url);
    if (st < 0)
        return MHD_NO;
    if (st > 0)
        return MHD_YES;
    static char nf[] = "not found";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof nf - 1, nf, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ok = MHD_queue_response(c, 404, r);
    MHD_destroy_response(r);
    return ok;
}

/* One request over a fresh connection; the whole response (head and body) into out. Returns
 * the status code, or -1. */
static int static_request(int port, const char *method, const char *target, const char *extra,
                          char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n", method,
                     target, extra ? extra : "");
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, out + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(fd);
    int status = -1;
    return sscanf(out, "HTTP/1.1 %d", &status) == 1 ? status : -1;
}

/* The value of header name in a response (case-insensitive name), into v. */
static int static_header(const char *resp, const char *name, char *v, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = strstr(resp, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        if (!strncasecmp(p + 2, name, n) && p[2 + n] == ':') {
            const char *s = p + 3 + n;
            while (*s == ' ')
                s++;
            size_t m = strcspn(s, "\r");
            snprintf(v, cap, "%.*s", (int)m, s);
            return 1;
        }
    }
    return 0;
}

TEST(static_serve_over_http)
{
    char root[PATH_MAX];
    static_tree(root, sizeof root);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL,
                                            NULL, static_test_handler, root, MHD_OPTION_SOCK_ADDR,
                                            (struct sockaddr *)&a, MHD_OPTION_END);
    REQUIRE(d != NULL);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = info ? info->port : 0;
    if (port <= 0) {
        MHD_stop_daemon(d);
        REQUIRE(port > 0);
    }
    char resp[8192], v[256];
    CHECK(static_request(port, "GET", "/", NULL, resp, sizeof resp) == 200);
    CHECK(static_header(resp, "Content-Type", v, sizeof v) &&
          !strcmp(v, "text/html; charset=utf-8"));
    CHECK(strstr(resp, "\r\n\r\n<!doctype html>") != NULL);
    CHECK(static_header(resp, "Cache-Control", v, sizeof v) && !strcmp(v, "no-cache"));
    CHECK(static_header(resp, "X-Content-Type-Options", v, sizeof v));

    CHECK(static_request(port, "GET", "/app.js", NULL, resp, sizeof resp) == 200);
    CHECK(static_header(resp, "Content-Type", v, sizeof v) &&
          !strcmp(v, "text/javascript; charset=utf-8"));
    CHECK(static_header(resp, "Content-Length", v, sizeof v) && atoi(v) == 20);
    char etag[128] = "", cond[200];
    CHECK(static_header(resp, "ETag", etag, sizeof etag) && etag[0] == '"');
    snprintf(cond, sizeof cond, "If-None-Match: %s\r\n", etag);
    CHECK(static_request(port, "GET", "/app.js", cond, resp, sizeof resp) == 304);
    CHECK(strstr(resp, "export") == NULL);
    CHECK(static_request(port, "GET", "/app.js", "If-None-Match: \"other\"\r\n", resp,
                         sizeof resp) == 200);

    CHECK(static_request(port, "HEAD", "/lib/x.css", NULL, resp, sizeof resp) == 200);
    CHECK(strstr(resp, "body{}") == NULL);
    CHECK(static_header(resp, "Content-Type", v, sizeof v) &&
          !strcmp(v, "text/css; charset=utf-8"));

    CHECK(static_request(port, "GET", "/../outside.txt", NULL, resp, sizeof resp) == 404);
    CHECK(static_request(port, "GET", "/%2e%2e/outside.txt", NULL, resp, sizeof resp) == 404);
    CHECK(static_request(port, "GET", "/lib/%2E%2E/%2E%2E/outside.txt", NULL, resp, sizeof resp) ==
          404);
    CHECK(static_request(port, "GET", "/link", NULL, resp, sizeof resp) == 404);
    CHECK(static_request(port, "GET", "/.secret", NULL, resp, sizeof resp) == 404);
    CHECK(static_request(port, "GET", "/missing", NULL, resp, sizeof resp) == 404);
    CHECK(static_request(port, "POST", "/app.js", "Content-Length: 0\r\n", resp, sizeof resp) ==
          404);
    CHECK(strstr(resp, "outside") == NULL);
    MHD_stop_daemon(d);
}
