/*
 * A Docker volume plugin (docker.volumedriver/1.0) for the tests: a small static program that
 * speaks Docker's plugin protocol (HTTP/1.1 POST, JSON bodies) on a unix socket, as a real
 * managed plugin does. tpcm runs it as a gNOI containerz plugin (tests/plugins.rs).
 *
 * Volumes are directories under the plugin's propagated mount (VOLUME_ROOT, /mnt/volumes by
 * default). Mount puts a tmpfs on <root>/<name>/data, so what a container writes into the
 * volume lives in a mount the plugin made inside its own mount namespace: it reaches the host
 * (and the container) only through the rshared propagated mount. Create keeps the request's body
 * in <root>/<name>/create.json (so a test can check that the options reached the driver). As a
 * real driver it counts its users: Mount adds one, Unmount takes one, and the tmpfs goes with the
 * last; the count is kept in <root>/<name>/mounts, so a test sees whether Mount and Unmount pair.
 *
 * Environment: PLUGIN_SOCKET (default DEFAULT_SOCKET, which the build may set), VOLUME_ROOT.
 * SIGTERM ends it (as PID 1 of its container it would otherwise ignore the signal).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef DEFAULT_SOCKET
#define DEFAULT_SOCKET "/run/docker/plugins/tvol.sock"
#endif

static const char *root = "/mnt/volumes";

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

/* The string value of "key" in a flat JSON body, copied into out (empty when absent). */
static void json_string(const char *body, const char *key, char *out, size_t n) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    out[0] = 0;
    const char *p = strstr(body, pattern);
    if (!p)
        return;
    p = strchr(p + strlen(pattern), ':');
    if (!p)
        return;
    p = strchr(p, '"');
    if (!p)
        return;
    p++;
    size_t i = 0;
    while (*p && *p != '"' && i + 1 < n)
        out[i++] = *p++;
    out[i] = 0;
}

static int valid_name(const char *name) {
    return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

static void reply(int fd, int status, const char *json) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/vnd.docker.plugins.v1.1+json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, status == 200 ? "OK" : "Internal Server Error", strlen(json));
    if (write(fd, head, n) < 0 || write(fd, json, strlen(json)) < 0)
        perror("reply");
}

static void error_reply(int fd, const char *message) {
    char body[512];
    snprintf(body, sizeof body, "{\"Err\":\"%s\"}", message);
    reply(fd, 500, body);
}

static int is_mounted(const char *path) {
    struct stat here, parent;
    char up[1024];
    snprintf(up, sizeof up, "%s/..", path);
    return stat(path, &here) == 0 && stat(up, &parent) == 0 && here.st_dev != parent.st_dev;
}

/* The users of a volume, as <dir>/mounts holds them. */
static int users(const char *dir) {
    char path[1100];
    snprintf(path, sizeof path, "%s/mounts", dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (f) {
        if (fscanf(f, "%d", &n) != 1)
            n = 0;
        fclose(f);
    }
    return n;
}

static void set_users(const char *dir, int n) {
    char path[1100];
    snprintf(path, sizeof path, "%s/mounts", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%d\n", n);
        fclose(f);
    }
}

static void handle(int fd, const char *path, const char *body) {
    char name[256], dir[1024], data[1024], out[2048];
    json_string(body, "Name", name, sizeof name);
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    snprintf(data, sizeof data, "%s/data", dir);
    if (!strcmp(path, "/Plugin.Activate")) {
        reply(fd, 200, "{\"Implements\":[\"VolumeDriver\"]}");
    } else if (!strcmp(path, "/VolumeDriver.Capabilities")) {
        reply(fd, 200, "{\"Capabilities\":{\"Scope\":\"local\"}}");
    } else if (!strcmp(path, "/VolumeDriver.List")) {
        char list[4096] = "{\"Volumes\":[";
        DIR *d = opendir(root);
        struct dirent *e;
        int first = 1;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char item[600];
            snprintf(item, sizeof item, "%s{\"Name\":\"%s\",\"Mountpoint\":\"%s/%s/data\"}", first ? "" : ",",
                     e->d_name, root, e->d_name);
            strncat(list, item, sizeof list - strlen(list) - 3);
            first = 0;
        }
        if (d)
            closedir(d);
        strcat(list, "],\"Err\":\"\"}");
        reply(fd, 200, list);
    } else if (!valid_name(name)) {
        error_reply(fd, "a volume name is needed");
    } else if (!strcmp(path, "/VolumeDriver.Create")) {
        if (strstr(body, "\"refuse\""))
            return error_reply(fd, "refused as asked");
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            return error_reply(fd, strerror(errno));
        mkdir(data, 0755);
        snprintf(out, sizeof out, "%s/create.json", dir);
        FILE *f = fopen(out, "w");
        if (f) {
            fputs(body, f);
            fclose(f);
        }
        reply(fd, 200, "{\"Err\":\"\"}");
    } else if (access(dir, F_OK) < 0) {
        snprintf(out, sizeof out, "volume %s not found", name);
        error_reply(fd, out);
    } else if (!strcmp(path, "/VolumeDriver.Remove")) {
        if (is_mounted(data) || users(dir) > 0)
            return error_reply(fd, "volume is in use");
        snprintf(out, sizeof out, "%s/create.json", dir);
        unlink(out);
        snprintf(out, sizeof out, "%s/mounts", dir);
        unlink(out);
        rmdir(data);
        if (rmdir(dir) < 0)
            return error_reply(fd, strerror(errno));
        reply(fd, 200, "{\"Err\":\"\"}");
    } else if (!strcmp(path, "/VolumeDriver.Mount")) {
        if (!is_mounted(data) && mount("tmpfs", data, "tmpfs", 0, "mode=0777") < 0)
            return error_reply(fd, strerror(errno));
        set_users(dir, users(dir) + 1);
        snprintf(out, sizeof out, "{\"Mountpoint\":\"%s\",\"Err\":\"\"}", data);
        reply(fd, 200, out);
    } else if (!strcmp(path, "/VolumeDriver.Unmount")) {
        int n = users(dir);
        if (n <= 0)
            return error_reply(fd, "volume is not mounted");
        set_users(dir, n - 1);
        if (n == 1 && is_mounted(data) && umount2(data, MNT_DETACH) < 0)
            return error_reply(fd, strerror(errno));
        reply(fd, 200, "{\"Err\":\"\"}");
    } else if (!strcmp(path, "/VolumeDriver.Path")) {
        snprintf(out, sizeof out, "{\"Mountpoint\":\"%s\",\"Err\":\"\"}", data);
        reply(fd, 200, out);
    } else if (!strcmp(path, "/VolumeDriver.Get")) {
        snprintf(out, sizeof out, "{\"Volume\":{\"Name\":\"%s\",\"Mountpoint\":\"%s\"},\"Err\":\"\"}", name, data);
        reply(fd, 200, out);
    } else {
        error_reply(fd, "unknown endpoint");
    }
}

int main(void) {
    const char *socket_path = getenv("PLUGIN_SOCKET");
    if (!socket_path)
        socket_path = DEFAULT_SOCKET;
    if (getenv("VOLUME_ROOT"))
        root = getenv("VOLUME_ROOT");
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    mkdir(root, 0755);
    /* A driver starting afresh has no users (its mounts went with its last run). */
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char dir[1024];
        if (e->d_name[0] == '.')
            continue;
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        if (users(dir) > 0)
            set_users(dir, 0);
    }
    if (d)
        closedir(d);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, socket_path, sizeof addr.sun_path - 1);
    unlink(socket_path);
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 16) < 0) {
        perror(socket_path);
        return 1;
    }
    fprintf(stderr, "volume plugin listening on %s, volumes in %s\n", socket_path, root);
    for (;;) {
        int fd = accept(s, NULL, NULL);
        if (fd < 0)
            continue;
        char request[16384];
        size_t got = 0;
        char *end = NULL;
        long length = 0;
        /* Headers, then as much body as Content-Length says. */
        while (got + 1 < sizeof request) {
            ssize_t n = read(fd, request + got, sizeof request - 1 - got);
            if (n <= 0)
                break;
            got += n;
            request[got] = 0;
            end = strstr(request, "\r\n\r\n");
            if (end) {
                char *cl = strcasestr(request, "Content-Length:");
                length = cl && cl < end ? strtol(cl + 15, NULL, 10) : 0;
                if ((long)(got - (end + 4 - request)) >= length)
                    break;
            }
        }
        request[got] = 0;
        char method[8] = "", path[256] = "";
        sscanf(request, "%7s %255s", method, path);
        handle(fd, path, end ? end + 4 : "");
        close(fd);
    }
}
