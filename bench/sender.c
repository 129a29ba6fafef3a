/* The load generator's cheap media sender (bench/csender.py compiles it with gcc at run time).
 *
 * argv: packets_fd socket_fd streams packet_size per_stream t0_ns end_ns
 * The packets file (a memfd) holds each stream's precomputed packets back to back: stream s,
 * packet k at (s * per_stream + k) * packet_size.  Sends on socket_fd (the worker's RTP socket,
 * so the source port is the one offered in SDP) in 1 ms slots from t0 (CLOCK_MONOTONIC, the
 * clock of Python's time.monotonic) until end, one sendmmsg per slot.
 * stdin: "A stream ipv4 port slot\n" starts a stream in slot 0..19 at its next turn; the worker
 * writes these as calls are answered.  On reaching end it prints one line:
 *   sent N errors E exhausted X lag b0 .. b6 worst_ns W cpu_ns C rt 0|1
 * (lag buckets: packets that left < 1, 2, 5, 10, 20, 50 ms and more after their slot was due).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 20
#define SLOT_NS 1000000LL
#define BATCH 1024
static const long long BOUNDS_NS[] = {1000000, 2000000, 5000000, 10000000, 20000000, 50000000};
#define BUCKETS 7

struct stream {
    struct sockaddr_in to;
    long next;    /* index of the next packet to send */
    int slot;     /* -1: not started */
};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static char line[256];
static size_t line_len;

/* Reads whatever commands are waiting on stdin (non-blocking); returns 0 on EOF. */
static int read_commands(struct stream *streams, long count, int **slot_lists, long *slot_sizes) {
    char buffer[65536];
    for (;;) {
        ssize_t got = read(0, buffer, sizeof buffer);
        if (got == 0)
            return 0;
        if (got < 0)
            return errno == EAGAIN || errno == EINTR ? 1 : 0;
        for (ssize_t i = 0; i < got; i++) {
            if (buffer[i] != '\n') {
                if (line_len < sizeof line - 1)
                    line[line_len++] = buffer[i];
                continue;
            }
            line[line_len] = 0;
            line_len = 0;
            long s;
            char address[64];
            int port, slot;
            if (sscanf(line, "A %ld %63s %d %d", &s, address, &port, &slot) != 4 || s < 0 || s >= count
                || slot < 0 || slot >= SLOTS || streams[s].slot >= 0) {
                fprintf(stderr, "sender: bad command %s\n", line);
                exit(2);
            }
            streams[s].to.sin_family = AF_INET;
            streams[s].to.sin_port = htons((uint16_t)port);
            if (inet_pton(AF_INET, address, &streams[s].to.sin_addr) != 1) {
                fprintf(stderr, "sender: bad IPv4 address in %s\n", line);
                exit(2);
            }
            streams[s].slot = slot;
            slot_lists[slot][slot_sizes[slot]++] = (int)s;
        }
    }
}

static void send_batch(int sock, struct mmsghdr *messages, long count, long long *sent, long long *errors) {
    long done = 0;
    while (done < count) {
        int r = sendmmsg(sock, messages + done, (unsigned)(count - done), 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            (*errors)++;  /* this packet is lost at the sender: counted, not retried */
            done++;
        } else {
            *sent += r;
            done += r;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: sender packets_fd socket_fd streams packet_size per_stream t0_ns end_ns\n");
        return 2;
    }
    int packets_fd = atoi(argv[1]), sock = atoi(argv[2]);
    long count = atol(argv[3]), size = atol(argv[4]), per_stream = atol(argv[5]);
    long long t0 = atoll(argv[6]), end = atoll(argv[7]);
    size_t total = (size_t)count * per_stream * size;
    unsigned char *packets = total ? mmap(NULL, total, PROT_READ, MAP_SHARED | MAP_POPULATE, packets_fd, 0) : NULL;
    if (total && packets == MAP_FAILED) {
        perror("sender: mmap of the packets");
        return 2;
    }
    struct stream *streams = calloc(count ? count : 1, sizeof *streams);
    int *slot_lists[SLOTS];
    long slot_sizes[SLOTS] = {0};
    for (int i = 0; i < SLOTS; i++)
        slot_lists[i] = calloc(count ? count : 1, sizeof(int));
    for (long s = 0; s < count; s++)
        streams[s].slot = -1;
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    /* Packets from a network arrive when due whatever the machine is doing: the lowest real-time
     * priority keeps the other engineers' test runs from delaying them (it needs CAP_SYS_NICE;
     * without it the sender runs as before and reports rt 0).  Its CPU is bounded by the load. */
    struct sched_param priority = {.sched_priority = 1};
    int realtime = sched_setscheduler(0, SCHED_FIFO, &priority) == 0;

    static struct mmsghdr messages[BATCH];
    static struct iovec vectors[BATCH];
    long long sent = 0, errors = 0, exhausted = 0, worst = 0, buckets[BUCKETS] = {0};
    int open_stdin = 1;
    for (long long n = 0;; n++) {
        long long due = t0 + n * SLOT_NS;
        if (due >= end)
            break;
        if (open_stdin)
            open_stdin = read_commands(streams, count, slot_lists, slot_sizes);
        struct timespec at = {due / 1000000000LL, due % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR) {
        }
        int slot = (int)(n % SLOTS);
        long in_slot = 0, queued = 0;
        for (long i = 0; i < slot_sizes[slot]; i++) {
            struct stream *stream = &streams[slot_lists[slot][i]];
            if (stream->next >= per_stream) {
                exhausted++;
                continue;
            }
            long s = stream - streams;
            vectors[in_slot].iov_base = packets + ((size_t)s * per_stream + stream->next) * size;
            vectors[in_slot].iov_len = size;
            memset(&messages[in_slot].msg_hdr, 0, sizeof messages[in_slot].msg_hdr);
            messages[in_slot].msg_hdr.msg_name = &stream->to;
            messages[in_slot].msg_hdr.msg_namelen = sizeof stream->to;
            messages[in_slot].msg_hdr.msg_iov = &vectors[in_slot];
            messages[in_slot].msg_hdr.msg_iovlen = 1;
            stream->next++;
            queued++;
            if (++in_slot == BATCH) {
                send_batch(sock, messages, in_slot, &sent, &errors);
                in_slot = 0;
            }
        }
        send_batch(sock, messages, in_slot, &sent, &errors);
        if (queued) {
            long long late = now_ns() - due;
            int b = 0;
            while (b < BUCKETS - 1 && late >= BOUNDS_NS[b])
                b++;
            buckets[b] += queued;
            if (late > worst)
                worst = late;
        }
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    long long cpu = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000000LL
                    + (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1000LL;
    printf("sent %lld errors %lld exhausted %lld lag", sent, errors, exhausted);
    for (int b = 0; b < BUCKETS; b++)
        printf(" %lld", buckets[b]);
    printf(" worst_ns %lld cpu_ns %lld rt %d\n", worst, cpu, realtime);
    return 0;
}
