/*
 * A stand-in for featureprofiles' cntrsrv (the container its CNTR tests deploy), for
 * tests/featureprofiles.rs: a small static program that listens on [::]:<port> (or
 * 0.0.0.0:<port> where the namespace has no IPv6), says so on stderr as cntrsrv does, and
 * answers one line per connection:
 *
 *   ping\n             -> pong <seconds since the epoch>\n   (cntrsrv's Ping)
 *   dial <host:port>\n -> dialed <what that server answered to ping>\n   (cntrsrv's Dial with ping)
 *
 * cntrsrv speaks gRPC over TLS; what the CNTR tests check of tpcm (the port reachable on the
 * host, one container reaching another) needs a server on that port, not its protocol.
 * Flags: --port=N (default 60061). SIGTERM ends it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static int listen_on(int port) {
    int one = 1, zero = 0;
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    if (s >= 0) {
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(s, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(s, 16) == 0) {
            fprintf(stderr, "cntr server listening on [::]:%d\n", port);
            return s;
        }
        close(s);
    }
    s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = {INADDR_ANY}};
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s < 0 || bind(s, (struct sockaddr *)&a4, sizeof a4) < 0 || listen(s, 16) < 0) {
        perror("listen");
        exit(1);
    }
    fprintf(stderr, "cntr server listening on 0.0.0.0:%d\n", port);
    return s;
}

/* Reads one line (without its newline) into buf. */
static int read_line(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got + 1 < n) {
        ssize_t r = read(fd, buf + got, 1);
        if (r <= 0 || buf[got] == '\n')
            break;
        got++;
    }
    buf[got] = 0;
    return (int)got;
}

/* Connects to host:port (the last ':' splits them; [v6] brackets are allowed), sends ping and
 * copies the answer into out. */
static void dial(const char *target, char *out, size_t n) {
    char host[256];
    snprintf(host, sizeof host, "%s", target);
    char *colon = strrchr(host, ':');
    if (!colon) {
        snprintf(out, n, "error no port in %s", target);
        return;
    }
    *colon = 0;
    const char *port = colon + 1;
    char *h = host;
    if (h[0] == '[') {
        h++;
        char *end = strchr(h, ']');
        if (end)
            *end = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *res;
    if (getaddrinfo(h, port, &hints, &res) != 0) {
        snprintf(out, n, "error cannot resolve %s", target);
        return;
    }
    int s = socket(res->ai_family, SOCK_STREAM, 0);
    if (s < 0 || connect(s, res->ai_addr, res->ai_addrlen) < 0) {
        snprintf(out, n, "error cannot connect to %s", target);
        freeaddrinfo(res);
        if (s >= 0)
            close(s);
        return;
    }
    freeaddrinfo(res);
    if (write(s, "ping\n", 5) != 5 || read_line(s, out, n) <= 0)
        snprintf(out, n, "error no answer from %s", target);
    close(s);
}

int main(int argc, char **argv) {
    int port = 60061;
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--port=", 7))
            port = atoi(argv[i] + 7);
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IONBF, 0);
    int s = listen_on(port);
    for (;;) {
        int fd = accept(s, NULL, NULL);
        if (fd < 0)
            continue;
        char line[512], answer[600], dialed[512];
        read_line(fd, line, sizeof line);
        if (!strcmp(line, "ping")) {
            snprintf(answer, sizeof answer, "pong %ld\n", (long)time(NULL));
        } else if (!strncmp(line, "dial ", 5)) {
            dial(line + 5, dialed, sizeof dialed);
            snprintf(answer, sizeof answer, "dialed %s\n", dialed);
        } else {
            snprintf(answer, sizeof answer, "error unknown request\n");
        }
        if (write(fd, answer, strlen(answer)) < 0)
            perror("write");
        close(fd);
    }
}
