/*
 * bench/loadgen.c: the open-loop HTTP/1.1 client of bench/run.py's scenario c.
 *
 * Holds --connections keep-alive connections (one request in flight on each) that
 * together send --rate requests per second of GET <path>, "{id}" in the path replaced
 * by a seeded uniform id in 1..--ids, on one thread: epoll, non-blocking sockets and a
 * binary heap of the connections' next send times. wrk 4.1 with a Lua delay() spends
 * 0.3-0.5 ms of CPU per response at 10,000 connections (its timer list is scanned on
 * every event); this spends a few hundredths of that.
 *
 * Pacing (open loop, bench/lua/mixed.lua's distribution): a connection's next send is
 * its previous *scheduled* time plus a think time uniform in 0..2*connections/rate
 * seconds (mean connections/rate), so the offered rate does not sag when the server
 * slows down. A send that comes due while the connection still waits for its previous
 * response (or reconnects) waits in that connection's backlog and goes out as soon as
 * it can. The first send of each connection comes after a wait drawn from the
 * stationary distribution of the time to a connection's next send (density falling
 * linearly from 0 to 2*mean), counted from its connect as wrk counts it (mixed.lua's
 * first_waits), so the rate is steady from the start. All connections are opened at
 * once at start (--connect-spread spreads them).
 * Sends are woken for on a 1 ms grid (--tick-us, as wrk's ae timers): a send due
 * within a tick goes out at its end or on an earlier wake-up for a response, up to
 * 1 ms late ("send_lag"); each wake-up is a context switch, most of the CPU here.
 *
 * Latency is reported two ways, over the requests *scheduled* at or after --warmup
 * seconds (the same connections carry the warm-up and the measured window):
 *   - from the write of the request's first byte to the response's last byte: what
 *     bench/lua/timed.lua measures under wrk (p50_ms ... max_ms, the headline numbers);
 *   - from the scheduled send time ("scheduled": {...}): that plus the time the request
 *     waited for its connection or for this client's event loop (no coordinated
 *     omission). "send_lag" is the difference alone.
 * Requests scheduled in the first --storm seconds are reported apart ("storm").
 * After --warmup + --duration seconds no new request is sent; the ones in flight get
 * up to --timeout seconds to finish (and count). A request in flight for longer than
 * --timeout counts as a timeout (once) and is still timed if it is answered.
 *
 * Output: one line "BENCH_JSON {...}" on stdout, the fields of bench/lua/timed.lua
 * ("requests" = measured responses, "duration_us" = the measured window) plus the
 * client's own CPU time (getrusage) and more; see print_json().
 *
 *   gcc -O2 -Wall -Wextra -o loadgen bench/loadgen.c
 *   ./loadgen --port 8000 --connections 10000 --rate 1000 --warmup 10 --duration 20 \
 *       --ids 1000 --path '/api/v1/users/{id}?include=appointments,payments,organizations'
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
#define HOUSEKEEPING_NS (100 * NS_PER_MS) /* timeouts and reconnects are checked this often */
#define RECONNECT_BACKOFF_NS (100 * NS_PER_MS) /* after a failed connect */
#define MAX_BACKLOG 8 /* sends that may wait on one busy connection; more are skipped */
#define MAX_HEAD 65536 /* a response head larger than this is a protocol error */
#define SERIES_NS (100 * NS_PER_MS)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* -- options ------------------------------------------------------------------------ */

static struct {
    const char *host;
    int port;
    const char *path;
    uint32_t connections;
    double rate, warmup, duration, storm, timeout, connect_spread;
    uint64_t tick_ns; /* sends are woken for on this grid: see main() */
    uint64_t ids, seed;
    const char *series;
    bool check_id; /* a 2xx body must start with {"id":<the requested id> */
} opt = {"127.0.0.1", 0, "/", 10000, 1000, 10, 20, 5, 10, 0, 1000000, 1000, 1, NULL, false};

/* -- randomness: xoshiro256**, seeded by splitmix64 ---------------------------------- */

static uint64_t rng[4];

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next64(void)
{
    uint64_t result = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return result;
}

static void seed_rng(uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        rng[i] = z ^ (z >> 31);
    }
}

static double uniform01(void) { return (double)(next64() >> 11) * 0x1.0p-53; }

/* 1..n, uniform (Lemire's multiply-shift; the bias is below 2^-40 for these n). */
static uint64_t pick_id(uint64_t n) { return 1 + (uint64_t)(((unsigned __int128)next64() * n) >> 64); }

/* -- latency histogram ----------------------------------------------------------------
 * Log-linear over microseconds, HdrHistogram-like: each value below 1024 us has its own
 * bucket (1 us resolution up to ~1 ms); above, every power of two [2^k, 2^(k+1)) is cut
 * into 128 equal buckets, so a bucket is at most 1/128 of its values wide. A percentile
 * is reported as its bucket's midpoint (relative error < 0.4 %), never above the exact
 * max; count, sum (for the mean) and max are exact. Values are capped at 2^40 us. */

#define LINEAR 1024
#define SUB_BITS 7
#define TOP_BITS 40
#define NBUCKETS (LINEAR + (TOP_BITS - 10) * (1 << SUB_BITS))

struct hist {
    uint64_t count, sum_us, max_us;
    uint64_t b[NBUCKETS];
};

static size_t bucket_of(uint64_t us)
{
    if (us < LINEAR)
        return (size_t)us;
    if (us >= 1ull << TOP_BITS)
        us = (1ull << TOP_BITS) - 1;
    int k = 63 - __builtin_clzll(us); /* 10..39 */
    return LINEAR + (size_t)(k - 10) * (1 << SUB_BITS) + ((us >> (k - SUB_BITS)) & ((1 << SUB_BITS) - 1));
}

static double bucket_mid_us(size_t i)
{
    if (i < LINEAR)
        return (double)i;
    size_t k = (i - LINEAR) / (1 << SUB_BITS) + 10, sub = (i - LINEAR) % (1 << SUB_BITS);
    double width = (double)(1ull << (k - SUB_BITS));
    return (double)(1ull << k) + (double)sub * width + (width - 1) / 2;
}

static void hist_add(struct hist *h, uint64_t ns)
{
    uint64_t us = (ns + 500) / 1000;
    h->count++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
    h->b[bucket_of(us)]++;
}

/* The value at rank ceil(count * p / 100), in ms (0 for an empty histogram). */
static double hist_pct_ms(const struct hist *h, double p)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil((double)h->count * p / 100.0), seen = 0;
    if (rank < 1)
        rank = 1;
    for (size_t i = 0; i < NBUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            double v = bucket_mid_us(i);
            return (v > (double)h->max_us ? (double)h->max_us : v) / 1000.0;
        }
    }
    return (double)h->max_us / 1000.0;
}

/* The histogram's fields, without braces (timed.lua's summary()). */
static void hist_fields(FILE *f, const struct hist *h, double seconds)
{
    fprintf(f,
            "\"requests\":%llu,\"duration_us\":%.0f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
            "\"p95_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"mean_ms\":%.3f,\"max_ms\":%.3f",
            (unsigned long long)h->count, seconds * 1e6, hist_pct_ms(h, 50), hist_pct_ms(h, 90),
            hist_pct_ms(h, 95), hist_pct_ms(h, 99), hist_pct_ms(h, 99.9),
            h->count ? (double)h->sum_us / (double)h->count / 1000.0 : 0.0, (double)h->max_us / 1000.0);
}

/* -- connections ---------------------------------------------------------------------- */

enum cstate { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };
/* Response parser states. */
enum pstate { P_HEAD, P_BODY, P_CHUNK_SIZE, P_CHUNK_EXT, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER, P_UNTIL_CLOSE };

struct conn {
    int fd;
    uint8_t state, pstate;
    bool close_after; /* the response said Connection: close (or was HTTP/1.0) */
    bool first_connect_done;
    bool timed_out;          /* the request in flight was counted as a timeout */
    uint8_t nbacklog, backlog_head;
    uint16_t status;
    uint32_t id;             /* the id the request in flight asked for */
    uint32_t line_len;       /* P_TRAILER: bytes on the current trailer line */
    uint64_t next_ns;        /* its next scheduled send (its entry in the heap) */
    uint64_t sched_ns;       /* the request in flight: its scheduled time */
    uint64_t write_ns;       /* ... when its first byte was written */
    uint64_t since_ns;       /* C_DOWN: connect again at; C_CONNECTING: connect began */
    uint64_t remaining;      /* body bytes left (Content-Length or the current chunk) */
    uint64_t resp_bytes;     /* bytes read for the response in flight */
    uint32_t body_seen;      /* body bytes copied into body_head */
    char body_head[24];      /* the body's first bytes, for --check-id */
    char *hbuf;              /* a response head split across reads */
    uint32_t hlen;
    char *out;               /* the unwritten rest of a request (a short write) */
    uint32_t out_len, out_off;
    uint64_t backlog[MAX_BACKLOG]; /* scheduled times that came due while busy */
};

static struct conn *conns;
static int ep;
static struct sockaddr_in addr;
static uint64_t start_ns, warm_ns, end_ns, storm_end_ns;
static double think_max_s; /* think time is uniform in 0..think_max_s */

/* -- results ---------------------------------------------------------------------------- */

static struct hist h_write, h_sched, h_lag, s_write, s_sched;
static uint64_t statuses[600], statuses_all[600];
static struct {
    uint64_t connect, read, write, timeout, status;
} err, err_measured;
static uint64_t sent_measured, responses_all, responses_after_warm, bytes_measured, bytes_all;
static uint64_t idle_closed, server_closed, skipped, unsent, unpaired, inflight, connected_first;
static uint64_t all_connected_ns; /* when the last of the first connects completed */
static double cpu_at_warm = -1;
/* Per 100 ms of write time, warm-up included: requests, latency sum and max, over 100 ms. */
static uint64_t *ser_n, *ser_slow;
static double *ser_sum, *ser_max;
static size_t ser_len;

/* -- the heap of next send times -------------------------------------------------------- */

struct entry {
    uint64_t t;
    uint32_t c;
};
static struct entry *heap;
static size_t heap_len;

static void heap_push(uint64_t t, uint32_t c)
{
    size_t i = heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent].t <= t)
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = (struct entry){t, c};
}

static struct entry heap_pop(void)
{
    struct entry top = heap[0], last = heap[--heap_len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap_len)
            break;
        if (child + 1 < heap_len && heap[child + 1].t < heap[child].t)
            child++;
        if (heap[child].t >= last.t)
            break;
        heap[i] = heap[child];
        i = child;
    }
    if (heap_len > 0)
        heap[i] = last;
    return top;
}

static uint64_t think_ns(void) { return (uint64_t)(uniform01() * think_max_s * 1e9); }

/* -- socket handling -------------------------------------------------------------------- */

static bool in_measured(uint64_t sched) { return sched >= warm_ns; }

static void count_error(uint64_t *total, uint64_t *measured, uint64_t sched)
{
    (*total)++;
    if (in_measured(sched))
        (*measured)++;
}

static void close_conn(struct conn *c, uint64_t reconnect_at)
{
    if (c->state == C_BUSY)
        inflight--;
    if (c->fd >= 0)
        close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->state = C_DOWN;
    c->since_ns = reconnect_at;
    free(c->hbuf);
    c->hbuf = NULL;
    c->hlen = 0;
    free(c->out);
    c->out = NULL;
}

static void start_connect(struct conn *c, uint64_t now)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err.connect++;
        c->since_ns = now + RECONNECT_BACKOFF_NS;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        err.connect++;
        c->since_ns = now + RECONNECT_BACKOFF_NS;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)(c - conns)};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    c->fd = fd;
    c->state = C_CONNECTING;
    c->since_ns = now;
}

static void set_events(struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - conns)};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static char host_header[128];
static const char *path_before, *path_after; /* the path around "{id}" */
static size_t before_len, after_len;

/* Writes the request for a send scheduled at `sched`; the connection is idle. */
static void send_request(struct conn *c, uint64_t sched)
{
    char req[2048], digits[24];
    c->id = (uint32_t)pick_id(opt.ids);
    int dn = snprintf(digits, sizeof digits, "%u", c->id);
    size_t len = 0;
    memcpy(req, "GET ", 4);
    len = 4;
    memcpy(req + len, path_before, before_len);
    len += before_len;
    if (path_after) {
        memcpy(req + len, digits, (size_t)dn);
        len += (size_t)dn;
        memcpy(req + len, path_after, after_len);
        len += after_len;
    }
    len += (size_t)snprintf(req + len, sizeof req - len, " HTTP/1.1\r\n%s\r\n", host_header);

    uint64_t now = now_ns();
    c->sched_ns = sched;
    c->write_ns = now;
    c->state = C_BUSY;
    c->pstate = P_HEAD;
    c->resp_bytes = 0;
    c->body_seen = 0;
    c->close_after = false;
    c->timed_out = false;
    inflight++;
    if (in_measured(sched))
        sent_measured++;
    ssize_t n = send(c->fd, req, len, MSG_NOSIGNAL);
    if (n == (ssize_t)len)
        return;
    if (n < 0 && errno != EAGAIN) {
        count_error(&err.write, &err_measured.write, sched);
        close_conn(c, now);
        return;
    }
    /* A short write (never seen for a request this small): the rest on EPOLLOUT. */
    size_t done = n > 0 ? (size_t)n : 0;
    c->out = malloc(len - done);
    memcpy(c->out, req + done, len - done);
    c->out_len = (uint32_t)(len - done);
    c->out_off = 0;
    set_events(c, EPOLLIN | EPOLLOUT);
}

/* Sends the oldest send waiting on this (idle) connection, if any. */
static void send_backlog(struct conn *c)
{
    if (c->nbacklog == 0 || c->state != C_IDLE)
        return;
    uint64_t sched = c->backlog[c->backlog_head];
    c->backlog_head = (uint8_t)((c->backlog_head + 1) % MAX_BACKLOG);
    c->nbacklog--;
    send_request(c, sched);
}

/* A send came due on connection c. */
static void due(struct conn *c, uint64_t sched)
{
    if (c->state == C_IDLE && c->nbacklog == 0) {
        send_request(c, sched);
        return;
    }
    if (c->nbacklog == MAX_BACKLOG) {
        skipped++;
        return;
    }
    c->backlog[(c->backlog_head + c->nbacklog) % MAX_BACKLOG] = sched;
    c->nbacklog++;
}

static void record_series(uint64_t write_ns, uint64_t lat_ns)
{
    size_t b = (size_t)((write_ns - start_ns) / SERIES_NS);
    if (b >= ser_len)
        return;
    double ms = (double)lat_ns / 1e6;
    ser_n[b]++;
    ser_sum[b] += ms;
    if (ms > ser_max[b])
        ser_max[b] = ms;
    if (ms > 100)
        ser_slow[b]++;
}

static bool id_matches(const struct conn *c)
{
    char want[40];
    int n = snprintf(want, sizeof want, "{\"id\":%u", c->id);
    if (c->body_seen < (uint32_t)n + 1)
        return false;
    /* the id must not continue with another digit: {"id":12 is not {"id":123 */
    return memcmp(c->body_head, want, (size_t)n) == 0 &&
           !(c->body_head[n] >= '0' && c->body_head[n] <= '9');
}

/* The response in flight on c is complete. */
static void complete(struct conn *c)
{
    uint64_t now = now_ns(), lat = now - c->write_ns, from_sched = now - c->sched_ns;
    bool measured = in_measured(c->sched_ns);
    responses_all++;
    bytes_all += c->resp_bytes;
    if (now >= warm_ns)
        responses_after_warm++;
    statuses_all[c->status < 600 ? c->status : 0]++;
    if (c->status >= 400)
        err.status++;
    record_series(c->write_ns, lat);
    if (c->sched_ns < storm_end_ns) {
        hist_add(&s_write, lat);
        hist_add(&s_sched, from_sched);
    }
    if (measured) {
        hist_add(&h_write, lat);
        hist_add(&h_sched, from_sched);
        hist_add(&h_lag, c->write_ns - c->sched_ns);
        statuses[c->status < 600 ? c->status : 0]++;
        bytes_measured += c->resp_bytes;
        if (c->status >= 400)
            err_measured.status++;
        if (opt.check_id && c->status >= 200 && c->status < 300 && !id_matches(c))
            unpaired++;
    }
    inflight--;
    c->state = C_IDLE;
    if (c->close_after) {
        server_closed++;
        close_conn(c, now);
        return;
    }
    send_backlog(c);
}

static bool header_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

/* Does the value after "Name:" contain `word` (case-insensitively)? */
static bool value_has(const char *line, size_t len, const char *word)
{
    size_t n = strlen(word);
    for (size_t i = 0; i + n <= len; i++)
        if (strncasecmp(line + i, word, n) == 0)
            return true;
    return false;
}

/* Parses a complete head (status line and headers, `len` bytes up to the blank line)
 * and sets the body's framing. Returns false on a malformed head. */
static bool parse_head(struct conn *c, const char *head, size_t len)
{
    if (len < 12 || memcmp(head, "HTTP/1.", 7) != 0)
        return false;
    bool http10 = head[7] == '0', keep_alive = false, chunked = false, has_length = false;
    c->status = (uint16_t)((head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0'));
    c->close_after = false;
    uint64_t length = 0;
    const char *p = memchr(head, '\n', len), *end = head + len;
    while (p && ++p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((eol ? eol : end) - p);
        if (header_is(p, n, "content-length")) {
            has_length = true;
            length = strtoull(p + 15, NULL, 10);
        } else if (header_is(p, n, "transfer-encoding")) {
            chunked = value_has(p, n, "chunked");
        } else if (header_is(p, n, "connection")) {
            c->close_after = value_has(p, n, "close");
            keep_alive = value_has(p, n, "keep-alive");
        }
        p = eol;
    }
    if (http10 && !keep_alive)
        c->close_after = true;
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
        c->remaining = 0;
        c->pstate = P_BODY;
    } else if (chunked) {
        c->remaining = 0;
        c->pstate = P_CHUNK_SIZE;
    } else if (has_length) {
        c->remaining = length;
        c->pstate = P_BODY;
    } else {
        c->pstate = P_UNTIL_CLOSE;
        c->close_after = true;
    }
    return true;
}

static void keep_body_head(struct conn *c, const char *data, size_t n)
{
    size_t room = sizeof c->body_head - c->body_seen;
    if (room == 0)
        return;
    size_t take = n < room ? n : room;
    memcpy(c->body_head + c->body_seen, data, take);
    c->body_seen += (uint32_t)take;
}

/* Up to `avail` bytes of a body (or of a chunk) that `remaining` still expects: kept as
 * keep_body_head keeps them, counted off; how many were taken. */
static size_t take_body(struct conn *c, const char *data, size_t avail)
{
    size_t take = c->remaining < avail ? (size_t)c->remaining : avail;
    keep_body_head(c, data, take);
    c->remaining -= take;
    return take;
}

/* Feeds `n` bytes of response to the parser: -1 on a protocol error, 1 when the
 * response completed, 0 when more is needed. */
static int feed(struct conn *c, const char *data, size_t n)
{
    size_t i = 0;
    while (i < n) {
        switch (c->pstate) {
        case P_HEAD: {
            /* Fast path: the whole head in this read; else gather it in c->hbuf. */
            const char *src = data + i;
            size_t avail = n - i, used;
            if (c->hlen == 0) {
                const char *e = memmem(src, avail, "\r\n\r\n", 4);
                if (e) {
                    used = (size_t)(e - src) + 4;
                    if (!parse_head(c, src, used - 2))
                        return -1;
                    i += used;
                    break;
                }
            }
            if (c->hlen + avail > MAX_HEAD)
                return -1;
            size_t old = c->hlen;
            c->hbuf = realloc(c->hbuf, c->hlen + avail);
            memcpy(c->hbuf + c->hlen, src, avail);
            c->hlen += (uint32_t)avail;
            size_t from = old > 3 ? old - 3 : 0;
            const char *e = memmem(c->hbuf + from, c->hlen - from, "\r\n\r\n", 4);
            if (!e) {
                i = n;
                break;
            }
            size_t head_len = (size_t)(e - c->hbuf) + 4;
            bool ok = parse_head(c, c->hbuf, head_len - 2);
            i += head_len - old;
            free(c->hbuf);
            c->hbuf = NULL;
            c->hlen = 0;
            if (!ok)
                return -1;
            break;
        }
        case P_BODY:
            i += take_body(c, data + i, n - i);
            break;
        case P_CHUNK_SIZE: {
            char ch = data[i++];
            int v = ch >= '0' && ch <= '9' ? ch - '0'
                    : (ch | 0x20) >= 'a' && (ch | 0x20) <= 'f' ? (ch | 0x20) - 'a' + 10
                                                               : -1;
            if (v >= 0)
                c->remaining = c->remaining * 16 + (uint64_t)v;
            else if (ch == ';')
                c->pstate = P_CHUNK_EXT;
            else if (ch == '\n')
                c->pstate = c->remaining ? P_CHUNK_DATA : P_TRAILER;
            else if (ch != '\r' && ch != ' ' && ch != '\t')
                return -1;
            c->line_len = 0;
            break;
        }
        case P_CHUNK_EXT:
            if (data[i++] == '\n')
                c->pstate = c->remaining ? P_CHUNK_DATA : P_TRAILER;
            break;
        case P_CHUNK_DATA: {
            i += take_body(c, data + i, n - i);
            if (c->remaining == 0)
                c->pstate = P_CHUNK_CRLF;
            break;
        }
        case P_CHUNK_CRLF:
            if (data[i++] == '\n')
                c->pstate = P_CHUNK_SIZE;
            break;
        case P_TRAILER: {
            char ch = data[i++];
            if (ch == '\n') {
                if (c->line_len == 0) {
                    c->pstate = P_HEAD;
                    if (i != n)
                        return -1;
                    return 1;
                }
                c->line_len = 0;
            } else if (ch != '\r') {
                c->line_len++;
            }
            break;
        }
        case P_UNTIL_CLOSE:
            keep_body_head(c, data + i, n - i);
            i = n;
            break;
        }
        if (c->pstate == P_BODY && c->remaining == 0) {
            if (c->status >= 100 && c->status < 200) { /* an interim response: the real one follows */
                c->pstate = P_HEAD;
                continue;
            }
            c->pstate = P_HEAD;
            return i == n ? 1 : -1; /* bytes after the response: nothing was asked for them */
        }
    }
    return 0;
}

static char rbuf[1 << 16];

static void on_readable(struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, rbuf, sizeof rbuf);
        uint64_t now;
        if (n > 0) {
            if (c->state != C_BUSY) { /* bytes nobody asked for */
                err.read++;
                close_conn(c, now_ns());
                return;
            }
            c->resp_bytes += (uint64_t)n;
            int r = feed(c, rbuf, (size_t)n);
            if (r < 0) {
                count_error(&err.read, &err_measured.read, c->sched_ns);
                close_conn(c, now_ns());
                return;
            }
            if (r > 0) {
                complete(c);
                return;
            }
            if ((size_t)n < sizeof rbuf)
                return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        now = now_ns();
        if (n == 0 && c->state == C_BUSY && c->pstate == P_UNTIL_CLOSE) {
            complete(c); /* closes it: close_after is set */
            return;
        }
        if (c->state == C_BUSY) {
            count_error(&err.read, &err_measured.read, c->sched_ns);
        } else {
            /* The server closed an idle connection (its keep-alive timeout): wrk counts it
             * as a read error, so does this ("idle_closed" says how many were these). */
            idle_closed++;
            count_error(&err.read, &err_measured.read, now);
        }
        close_conn(c, now);
        return;
    }
}

static void on_writable(struct conn *c)
{
    uint64_t now = now_ns();
    if (c->state == C_CONNECTING) {
        int so_error = 0;
        socklen_t len = sizeof so_error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
        if (so_error) {
            count_error(&err.connect, &err_measured.connect, now);
            close_conn(c, now + RECONNECT_BACKOFF_NS);
            return;
        }
        c->state = C_IDLE;
        set_events(c, EPOLLIN);
        if (!c->first_connect_done) {
            /* The first wait starts once connected, as wrk's first delay() does: drawn
             * from the stationary distribution of the time to the next send of a
             * connection whose waits are uniform in 0..T, density 2(T-x)/T^2
             * (mixed.lua's first_waits), by inverting its CDF: x = T(1 - sqrt(1 - U)). */
            c->next_ns = now + (uint64_t)(think_max_s * (1 - sqrt(1 - uniform01())) * 1e9);
            heap_push(c->next_ns, (uint32_t)(c - conns));
            c->first_connect_done = true;
            connected_first++;
            if (connected_first == opt.connections)
                all_connected_ns = now;
        }
        send_backlog(c);
        return;
    }
    if (c->out) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            count_error(&err.write, &err_measured.write, c->sched_ns);
            close_conn(c, now);
            return;
        }
        if (n > 0)
            c->out_off += (uint32_t)n;
        if (c->out_off < c->out_len)
            return;
        free(c->out);
        c->out = NULL;
    }
    set_events(c, EPOLLIN);
}

/* Every HOUSEKEEPING_NS: requests past --timeout, connects to (re)open. A request in
 * flight for longer than --timeout counts once as a timeout but keeps its connection
 * and is still timed when it is answered, as wrk does: closing it would make the
 * server's queue longer by a connect, not shorter. */
static void housekeeping(uint64_t now, bool sending)
{
    uint64_t limit = (uint64_t)(opt.timeout * 1e9);
    for (uint32_t i = 0; i < opt.connections; i++) {
        struct conn *c = &conns[i];
        if (c->state == C_BUSY && !c->timed_out && now - c->write_ns > limit) {
            c->timed_out = true;
            count_error(&err.timeout, &err_measured.timeout, c->sched_ns);
        }
        if (sending && c->state == C_DOWN && now >= c->since_ns)
            start_connect(c, now);
    }
}

/* -- output ------------------------------------------------------------------------------ */

static void statuses_json(FILE *f, const uint64_t *counts)
{
    bool first = true;
    for (int s = 0; s < 600; s++)
        if (counts[s]) {
            fprintf(f, "%s\"%d\":%llu", first ? "" : ",", s, (unsigned long long)counts[s]);
            first = false;
        }
}

static void write_series(void)
{
    FILE *f = fopen(opt.series, "w");
    if (!f) {
        perror(opt.series);
        return;
    }
    fprintf(f, "t_s\trequests\tmean_ms\tmax_ms\tover_100ms\n");
    for (size_t b = 0; b < ser_len; b++)
        if (ser_n[b])
            fprintf(f, "%.1f\t%llu\t%.2f\t%.1f\t%llu\n", (double)b / 10, (unsigned long long)ser_n[b],
                    ser_sum[b] / (double)ser_n[b], ser_max[b], (unsigned long long)ser_slow[b]);
    fclose(f);
}

static void errors_fields(FILE *f, const char *prefix, uint64_t connect, uint64_t read_,
                          uint64_t write_, uint64_t timeout, uint64_t status)
{
    fprintf(f, "\"%sconnect\":%llu,\"%sread\":%llu,\"%swrite\":%llu,\"%stimeout\":%llu,\"%sstatus_errors\":%llu",
            prefix, (unsigned long long)connect, prefix, (unsigned long long)read_, prefix,
            (unsigned long long)write_, prefix, (unsigned long long)timeout, prefix,
            (unsigned long long)status);
}

/* One line: BENCH_JSON {...}. The top level is the measured window, latency from the
 * write (timed.lua's fields; error counts over the whole run, as wrk counts them);
 * "scheduled" the same requests from their scheduled time; "storm" the requests
 * scheduled in the first --storm seconds; "cpu_*" this process's user + system time. */
static void print_json(double cpu_total, double cpu_measured, double elapsed)
{
    FILE *f = stdout;
    unsigned long long ull;
    fprintf(f, "BENCH_JSON {");
    hist_fields(f, &h_write, opt.duration);
    fprintf(f, ",\"rps\":%.1f,\"sent\":%llu,\"responses\":%llu,", (double)h_write.count / opt.duration,
            (unsigned long long)sent_measured, (unsigned long long)responses_all);
    errors_fields(f, "", err.connect, err.read, err.write, err.timeout, err.status);
    fprintf(f, ",\"errors_measured\":{");
    errors_fields(f, "", err_measured.connect, err_measured.read, err_measured.write,
                  err_measured.timeout, err_measured.status);
    fprintf(f, "},\"bytes\":%llu,\"bytes_all\":%llu,\"unpaired\":%llu,\"statuses\":{",
            (unsigned long long)bytes_measured, (unsigned long long)bytes_all, (unsigned long long)unpaired);
    statuses_json(f, statuses);
    fprintf(f, "},\"statuses_all\":{");
    statuses_json(f, statuses_all);
    fprintf(f, "},\"scheduled\":{");
    hist_fields(f, &h_sched, opt.duration);
    fprintf(f, "},\"send_lag\":{");
    hist_fields(f, &h_lag, opt.duration);
    fprintf(f, "},\"storm\":{");
    hist_fields(f, &s_write, opt.storm);
    fprintf(f, ",\"scheduled\":{");
    hist_fields(f, &s_sched, opt.storm);
    ull = all_connected_ns ? (unsigned long long)((all_connected_ns - start_ns) / 1000) : 0;
    fprintf(f, "}},\"connected\":%llu,\"all_connected_us\":%llu,", (unsigned long long)connected_first, ull);
    fprintf(f, "\"idle_closed\":%llu,\"server_closed\":%llu,\"skipped\":%llu,\"unsent\":%llu,",
            (unsigned long long)idle_closed, (unsigned long long)server_closed,
            (unsigned long long)skipped, (unsigned long long)unsent);
    fprintf(f, "\"offered_rps\":%.1f,\"elapsed_s\":%.3f,\"cpu_s\":%.3f,\"cpu_measured_s\":%.3f,",
            opt.rate, elapsed, cpu_total, cpu_measured);
    fprintf(f, "\"responses_after_warmup\":%llu,\"cpu_ms_per_response\":%.4f,\"cpu_ms_per_response_all\":%.4f}\n",
            (unsigned long long)responses_after_warm,
            responses_after_warm ? 1000 * cpu_measured / (double)responses_after_warm : 0.0,
            responses_all ? 1000 * cpu_total / (double)responses_all : 0.0);
    fflush(f);
}

/* -- setup and the event loop ---------------------------------------------------------------- */

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --port N [--host 127.0.0.1] [--connections 10000] [--rate 1000]\n"
            "       [--warmup 10] [--duration 20] [--storm 5] [--timeout 10] [--connect-spread 0]\n"
            "       [--path '/api/v1/users/{id}'] [--ids 1000] [--seed 1] [--series FILE] [--check-id]\n"
            "       [--tick-us 1000]\n",
            argv0);
    exit(2);
}

static void parse_options(int argc, char **argv)
{
    static const struct option longs[] = {
        {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},
        {"path", required_argument, 0, 'P'},     {"connections", required_argument, 0, 'c'},
        {"rate", required_argument, 0, 'r'},     {"warmup", required_argument, 0, 'w'},
        {"duration", required_argument, 0, 'd'}, {"storm", required_argument, 0, 's'},
        {"timeout", required_argument, 0, 't'},  {"connect-spread", required_argument, 0, 'S'},
        {"ids", required_argument, 0, 'i'},      {"seed", required_argument, 0, 'e'},
        {"series", required_argument, 0, 'o'},   {"check-id", no_argument, 0, 'k'},
        {"tick-us", required_argument, 0, 'T'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'P': opt.path = optarg; break;
        case 'c': opt.connections = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 's': opt.storm = atof(optarg); break;
        case 't': opt.timeout = atof(optarg); break;
        case 'S': opt.connect_spread = atof(optarg); break;
        case 'i': opt.ids = strtoull(optarg, NULL, 10); break;
        case 'e': opt.seed = strtoull(optarg, NULL, 10); break;
        case 'o': opt.series = optarg; break;
        case 'k': opt.check_id = true; break;
        case 'T': opt.tick_ns = 1000 * strtoull(optarg, NULL, 10); break;
        default: usage(argv[0]);
        }
    }
    if (opt.port <= 0 || opt.connections == 0 || opt.rate <= 0 || opt.duration <= 0 || opt.ids == 0)
        usage(argv[0]);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)opt.connections + 64;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want;
    if (rl.rlim_max < want)
        rl.rlim_max = want; /* as root; else setrlimit fails and so will the sockets past the cap */
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void setup(void)
{
    raise_nofile();
    /* Wake up for a send when it is due, not up to 50 us later (the default slack). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    seed_rng(opt.seed);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "--host must be an IPv4 address: %s\n", opt.host);
        exit(2);
    }
    snprintf(host_header, sizeof host_header, "Host: %s:%d\r\n", opt.host, opt.port);
    path_before = opt.path;
    path_after = strstr(opt.path, "{id}");
    before_len = path_after ? (size_t)(path_after - opt.path) : strlen(opt.path);
    if (path_after) {
        path_after += 4;
        after_len = strlen(path_after);
    }
    if (before_len + after_len > 1800) {
        fprintf(stderr, "--path too long\n");
        exit(2);
    }
    /* mixed.lua: each wait uniform in 0..2*interval, interval = connections / rate. */
    think_max_s = 2.0 * opt.connections / opt.rate;
    ep = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc(opt.connections, sizeof *conns);
    heap = calloc(opt.connections, sizeof *heap);
    ser_len = (size_t)((opt.warmup + opt.duration) * 10) + 1;
    ser_n = calloc(ser_len, sizeof *ser_n);
    ser_slow = calloc(ser_len, sizeof *ser_slow);
    ser_sum = calloc(ser_len, sizeof *ser_sum);
    ser_max = calloc(ser_len, sizeof *ser_max);
    if (ep < 0 || !conns || !heap || !ser_n || !ser_slow || !ser_sum || !ser_max) {
        perror("setup");
        exit(1);
    }
    start_ns = now_ns();
    warm_ns = start_ns + (uint64_t)(opt.warmup * 1e9);
    end_ns = warm_ns + (uint64_t)(opt.duration * 1e9);
    storm_end_ns = start_ns + (uint64_t)(opt.storm * 1e9);
    for (uint32_t i = 0; i < opt.connections; i++) {
        struct conn *c = &conns[i];
        c->fd = -1;
        uint64_t at = start_ns + (uint64_t)(opt.connect_spread * 1e9 * i / opt.connections);
        if (opt.connect_spread > 0)
            c->since_ns = at; /* C_DOWN until then: housekeeping() connects it */
        else
            start_connect(c, start_ns);
    }
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

int main(int argc, char **argv)
{
    double cpu_start = cpu_seconds(); /* before the connects: they count too */
    parse_options(argc, argv);
    setup();
    uint64_t next_housekeeping = start_ns, drain_deadline = 0;
    bool sending = true;
    struct epoll_event events[512];
    for (;;) {
        uint64_t now = now_ns();
        /* Fire the sends that came due (before the end of the measured window). */
        while (sending && heap_len && heap[0].t <= now && heap[0].t < end_ns) {
            struct entry e = heap_pop();
            struct conn *c = &conns[e.c];
            due(c, e.t);
            c->next_ns = e.t + think_ns();
            heap_push(c->next_ns, e.c);
            now = now_ns();
        }
        if (cpu_at_warm < 0 && now >= warm_ns)
            cpu_at_warm = cpu_seconds();
        if (sending && now >= end_ns) {
            /* No more sends: the backlogs are dropped; the requests in flight may finish. */
            sending = false;
            drain_deadline = now + (uint64_t)(opt.timeout * 1e9);
            for (uint32_t i = 0; i < opt.connections; i++)
                unsent += conns[i].nbacklog;
        }
        if (!sending && (inflight == 0 || now >= drain_deadline)) {
            for (uint32_t i = 0; i < opt.connections; i++) /* never answered: timeouts */
                if (conns[i].state == C_BUSY && !conns[i].timed_out)
                    count_error(&err.timeout, &err_measured.timeout, conns[i].sched_ns);
            break;
        }
        if (now >= next_housekeeping) {
            housekeeping(now, sending);
            next_housekeeping = now + HOUSEKEEPING_NS;
        }
        uint64_t wake = min_u64(next_housekeeping, sending ? end_ns : drain_deadline);
        /* The next send's wake-up is rounded up to the --tick-us grid (1 ms, as wrk's
         * timers): the sends due within one tick go out on one wake-up, or earlier on a
         * wake-up for a response. Each wake-up costs a context switch, the largest part of
         * this client's CPU per response at 2,000/s; the send's lateness shows in
         * "send_lag" and "scheduled", not in the latency from the write. */
        if (sending && heap_len) {
            uint64_t t = heap[0].t;
            if (opt.tick_ns > 1)
                t = start_ns + ((t - start_ns) + opt.tick_ns - 1) / opt.tick_ns * opt.tick_ns;
            wake = min_u64(wake, t);
        }
        if (cpu_at_warm < 0)
            wake = min_u64(wake, warm_ns);
        uint64_t wait = wake > now ? wake - now : 0;
        struct timespec ts = {(time_t)(wait / NS_PER_S), (long)(wait % NS_PER_S)};
        int n = epoll_pwait2(ep, events, 512, &ts, NULL);
        if (n < 0 && errno != EINTR) {
            perror("epoll_pwait2");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[events[i].data.u32];
            uint32_t ev = events[i].events;
            if (c->fd < 0)
                continue;
            if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && (c->state == C_CONNECTING || c->out)) {
                on_writable(c);
                if (c->fd < 0 || c->state == C_IDLE)
                    continue;
            }
            if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c);
        }
    }
    double cpu_end = cpu_seconds();
    if (cpu_at_warm < 0)
        cpu_at_warm = cpu_end;
    if (opt.series)
        write_series();
    print_json(cpu_end - cpu_start, cpu_end - cpu_at_warm, (double)(now_ns() - start_ns) / 1e9);
    return 0;
}
