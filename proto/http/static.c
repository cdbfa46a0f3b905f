/* static — see static.h. */
#include "http/static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATIC_ETAG_MAX 64

/* A segment of a URL path that may name a file: not empty, not hidden (which also refuses
 * "." and ".."), no backslash (a separator elsewhere), no control characters. */
static int static_segment_ok(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f || ch == '\\')
            return 0;
    }
    return 1;
}

/* Checks every segment of url and writes the relative file path (index.html for a directory
 * URL) into rel. */
static int static_relative(const char *url, char *rel, size_t cap)
{
    if (!url || url[0] != '/')
        return -1;
    size_t len = strlen(url);
    const char *p = url + 1;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (!static_segment_ok(p, n))
            return -1;
        p += n + (slash ? 1 : 0);
    }
    const char *index = url[len - 1] == '/' ? "index.html" : "";
    int w = snprintf(rel, cap, "%s%s", url + 1, index);
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

int static_resolve(const char *root, const char *url, char *path, size_t cap)
{
    char rel[STATIC_PATH_MAX], joined[2 * STATIC_PATH_MAX + 2];
    char real_root[PATH_MAX], real_file[PATH_MAX];
    if (!root || !root[0] || static_relative(url, rel, sizeof rel))
        return -1;
    if (!realpath(root, real_root))
        return -1;
    snprintf(joined, sizeof joined, "%s/%s", real_root, rel);
    if (!realpath(joined, real_file))
        return -1;
    /* A symbolic link inside the root may point anywhere: what it resolves to must be inside. */
    size_t rn = strlen(real_root);
    int root_is_slash = rn == 1;
    if (strncmp(real_file, real_root, rn) || (!root_is_slash && real_file[rn] != '/'))
        return -1;
    struct stat sb;
    if (stat(real_file, &sb) || !S_ISREG(sb.st_mode))
        return -1;
    size_t fn = strlen(real_file);
    if (fn >= cap)
        return -1;
    memcpy(path, real_file, fn + 1);
    return 0;
}

const char *static_mime(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        { "html", "text/html; charset=utf-8" },
        { "js", "text/javascript; charset=utf-8" },
        { "mjs", "text/javascript; charset=utf-8" },
        { "css", "text/css; charset=utf-8" },
        { "json", "application/json" },
        { "webmanifest", "application/manifest+json" },
        { "map", "application/json" },
        { "txt", "text/plain; charset=utf-8" },
        { "svg", "image/svg+xml" },
        { "png", "image/png" },
        { "ico", "image/x-icon" },
        { "webp", "image/webp" },
        { "wasm", "application/wasm" },
        { "wav", "audio/wav" },
        { "ogg", "audio/ogg" },
        { "opus", "audio/ogg" },
    };
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot && dot[1])
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcasecmp(dot + 1, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

/* Adds the headers every answer carries; 0 when one could not be added. */
static int static_headers(struct MHD_Response *r, const char *etag)
{
    return MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag) == MHD_YES &&
           MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") == MHD_YES &&
           MHD_add_response_header(r, "X-Content-Type-Options", "nosniff") == MHD_YES;
}

static int static_queue(struct MHD_Connection *c, struct MHD_Response *r, int status)
{
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok == MHD_YES ? status : -1;
}

int static_serve(struct MHD_Connection *c, const char *root, const char *method, const char *url)
{
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return 0;
    char path[STATIC_PATH_MAX];
    if (static_resolve(root, url, path, sizeof path))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return 0;
    }
    /* Size and modification time name the version: a changed file gets a new tag. */
    char etag[STATIC_ETAG_MAX];
    snprintf(etag, sizeof etag, "\"%llx-%llx.%lx\"", (unsigned long long)sb.st_size,
             (unsigned long long)sb.st_mtim.tv_sec, (unsigned long)sb.st_mtim.tv_nsec);
    const char *inm =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && strstr(inm, etag)) {
        close(fd);
        struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!r || !static_headers(r, etag)) {
            if (r)
                MHD_destroy_response(r);
            return -1;
        }
        return static_queue(c, r, 304);
    }
    /* The response owns fd from here (closed by MHD_destroy_response's last reference). */
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    if (!r) {
        close(fd);
        return -1;
    }
    if (!static_headers(r, etag) ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, static_mime(path)) != MHD_YES) {
        MHD_destroy_response(r);
        return -1;
    }
    return static_queue(c, r, 200);
}
