/* wan-emu.c: a WAN link in userspace, for tests and benchmarks (the kernel
 * here has no netem).  It listens on one socket and forwards every
 * connection it accepts to a new connection to the target, through an
 * emulated link with a one-way delay and a capacity:
 *
 *   wan-emu --listen unix:PATH|tcp:HOST:PORT --connect unix:PATH|tcp:HOST:PORT
 *           [--delay 10ms] [--rate 100M] [--queue 64M] [--stats FILE]
 *           [--delay-file FILE] [--down-file FILE] [--down-mode hold|reset]
 *           [--pidfile FILE]
 *
 * The model, per direction ("up": from the accepted client to the target;
 * "down": back), each direction a link of its own:
 *   - Every chunk read from a source socket is stamped on arrival.  The link
 *     sends chunks one after another in arrival order, over all connections
 *     of that direction: its capacity is shared, as a real link's queue.  A
 *     chunk of n bytes occupies the link n * 8 / rate seconds, starting when
 *     it arrived or when the link finished the chunk before it, whichever is
 *     later.  It is written to its destination one delay after it left the
 *     link: arrival + queueing + n * 8 / rate + delay.  So a round trip
 *     (request, reply) takes at least 2 x delay; a transfer of S bytes at
 *     least S * 8 / rate.  Bytes of one connection stay in order, also when
 *     the delay shrinks.  The end of a stream (EOF) travels the same way.
 *   - The bytes held per direction (read and not yet written) are bounded by
 *     --queue (default 64 MiB): once over it, the emulator stops reading in
 *     that direction, and TCP's (or the unix socket's) back-pressure stops
 *     the senders.  The queue is the link's buffer: a sender that writes
 *     faster than the rate fills it, and its data then waits up to
 *     queue * 8 / rate (64 MiB at 100 Mbit/s: 5.4 s) before the delay; a
 *     real TCP connection across a long link keeps at most its window in
 *     flight.  A smaller --queue emulates a shallower buffer.
 *   - Connection set-up is not delayed: the emulator connects to the target
 *     when it accepts a client (the first data, e.g. an NBD greeting, is).
 *
 * Options:
 *   --delay D       one-way delay: a number with us, ms or s (10ms, 0.5s);
 *                   0 needs no unit.  Round trip = 2 x D.  Default 0.
 *   --rate R        link capacity in bit/s (as links are quoted), each
 *                   direction: a number with an optional k, M or G suffix
 *                   (powers of 1000), optionally followed by bit/s or bps
 *                   (100M = 100Mbit/s = 12.5 MB/s).  0 = unlimited (default).
 *   --queue SIZE    bytes held per direction before reading stops: a number
 *                   with an optional K, M or G suffix (powers of 1024).
 *                   Default 64M.
 *   --delay-file F  while F exists, its content (a duration as for --delay)
 *                   replaces the delay; read again every 50 ms.  Removing F
 *                   returns to --delay.  A content that is not a duration is
 *                   reported once and the previous delay stays.
 *   --down-file F   while F exists the link is down (checked every 50 ms):
 *                   nothing is sent or delivered, and reading stops once the
 *                   queue is full.  --down-mode hold (default): the data
 *                   waits and goes on when F is removed; connections stay
 *                   open.  --down-mode reset: when F appears every connection
 *                   is reset (both sockets closed with RST, the queued data
 *                   dropped), and while it exists new connections are
 *                   accepted and reset at once.
 *   --stats F       one line of key=value pairs, rewritten (atomically) every
 *                   second, on SIGUSR1 and at exit:
 *                     n            how many times the file was written
 *                     t            seconds since the start
 *                     connections  connections accepted; active: open now
 *                     up_read up_written down_read down_written
 *                                  bytes read from the sources and written to
 *                                  the destinations, per direction
 *                     up_queued down_queued  bytes held now
 *                     delay_us rate_bps down  the current link
 *                     resets connect_errors  connections reset (down-mode
 *                                  reset), failed connects to the target
 *   --pidfile F     written once listening (the emulator is ready); removed
 *                   at exit.
 *
 * SIGTERM or SIGINT: the stats are written, the sockets closed (data still
 * queued is dropped), the unix listening socket and the pidfile removed;
 * exit 0.  Bad arguments: one error message, exit 2.  Runtime errors that
 * stop it (cannot listen): exit 1.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PROG "wan-emu"
#define READ_MAX (64 * 1024)         /* bytes per read: one chunk at most */
#define FILE_CHECK 0.05              /* s between checks of the delay and down files */
#define STATS_EVERY 1.0              /* s between rewrites of the stats file */
#define HORIZON 0.002                /* s: the link schedules chunks this far ahead */

enum { UP = 0, DOWN = 1 };
static const char *const dir_name[2] = { "up", "down" };

struct conn;

struct chunk {
  struct chunk *next;                /* in its half's queue (byte order) */
  struct chunk *lprev, *lnext;       /* in the link's queue while not sent */
  struct conn *c;
  int dir;
  bool sent;                         /* left the link: deliver_at is set */
  bool eof;                          /* the end of the source's stream */
  double arrival, deliver_at;
  size_t len, off;                   /* off: bytes already written out */
  unsigned char data[];
};

struct half {                        /* one direction of a connection */
  int src, dst;
  struct chunk *head, *tail;         /* read, not yet written */
  bool eof_read;                     /* no more reads from src */
  bool done;                         /* the EOF was delivered */
  bool blocked;                      /* dst is full: wait for POLLOUT */
  double last_deliver;
};

struct conn {
  struct conn *next;
  unsigned id;
  int fd[2];                         /* [0] the accepted client, [1] the target */
  struct half h[2];
  bool closed;
};

struct link {                        /* one direction, shared by all connections */
  struct chunk *head, *tail;         /* read, not yet sent, in arrival order */
  double free_at;                    /* busy sending until then */
  uint64_t read, written, queued;
};

struct addr {
  bool is_unix;
  char *path;                        /* unix */
  struct addrinfo *ai;               /* tcp */
  const char *text;
};

/* Options and state */
static struct addr listen_addr, target_addr;
static double base_delay, delay;     /* seconds */
static double rate;                  /* bit/s, 0 = unlimited */
static uint64_t queue_limit = 64u << 20;
static const char *stats_file, *delay_file, *down_file, *pid_file;
static bool reset_mode;

static struct link link_[2];
static struct conn *conns;
static unsigned next_id = 1;
static uint64_t n_accepted, n_active, n_resets, n_connect_errors, n_stats;
static bool down;
static double t_start;
static char delay_file_bad[64];      /* the last bad content reported */

static volatile sig_atomic_t got_stop, got_usr1;

/* ---- small helpers ---------------------------------------------------- */

static double
now_s (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void
msg (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, PROG ": ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

static void __attribute__ ((noreturn))
usage_error (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, PROG ": ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\nTry '" PROG " --help'.\n");
  exit (2);
}

static void
usage (void)
{
  printf ("Usage: " PROG " --listen unix:PATH|tcp:HOST:PORT --connect unix:PATH|tcp:HOST:PORT\n"
          "         [--delay D] [--rate R] [--queue SIZE] [--stats FILE]\n"
          "         [--delay-file FILE] [--down-file FILE] [--down-mode hold|reset]\n"
          "         [--pidfile FILE]\n"
          "A WAN link between a listening socket and a target: per direction a one-way\n"
          "delay D (us, ms, s: 10ms; round trip 2 x D) and a capacity R in bit/s shared\n"
          "by all connections (k/M/G = 10^3/10^6/10^9: 100M; 0 = unlimited).\n"
          "See the comment at the top of tests/wan-emu.c for the model and every option.\n");
}

/* The number that starts s (finite, >= 0), *unit pointing after it at its
 * unit suffix.  -> the number, or -1. */
static double
parse_number (const char *s, const char **unit)
{
  char *end;
  double v;

  errno = 0;
  v = strtod (s, &end);
  if (errno || end == s || !isfinite (v) || v < 0)
    return -1;
  *unit = end;
  return v;
}

/* A duration: "0", or a number followed by us, ms or s.  -> seconds, or -1. */
static double
parse_duration (const char *s)
{
  const char *end;
  double v = parse_number (s, &end);

  if (v < 0)
    return -1;
  if (strcmp (end, "us") == 0)
    v /= 1e6;
  else if (strcmp (end, "ms") == 0)
    v /= 1e3;
  else if (strcmp (end, "s") == 0)
    ;
  else if (!(*end == '\0' && v == 0))
    return -1;
  return v > 3600 ? -1 : v;
}

/* A rate in bit/s: a number, optional k/M/G (10^3...), optional "bit/s" or "bps". */
static double
parse_rate (const char *s)
{
  const char *end;
  double v = parse_number (s, &end);

  if (v < 0)
    return -1;
  switch (*end) {
  case 'k': v *= 1e3; end++; break;
  case 'M': v *= 1e6; end++; break;
  case 'G': v *= 1e9; end++; break;
  default: break;
  }
  if (*end && strcmp (end, "bit/s") != 0 && strcmp (end, "bps") != 0 && strcmp (end, "bit") != 0)
    return -1;
  return v;
}

/* A size in bytes: a number, optional K/M/G (1024...). -> 0 on error */
static uint64_t
parse_size (const char *s)
{
  char *end;
  unsigned long long v;

  errno = 0;
  if (*s == '-')
    return 0;
  v = strtoull (s, &end, 10);
  if (errno || end == s)
    return 0;
  switch (*end) {
  case 'K': v <<= 10; end++; break;
  case 'M': v <<= 20; end++; break;
  case 'G': v <<= 30; end++; break;
  default: break;
  }
  return *end ? 0 : v;
}

static void
parse_addr (const char *opt, const char *s, struct addr *a, bool passive)
{
  a->text = s;
  if (strncmp (s, "unix:", 5) == 0) {
    struct sockaddr_un sun;

    a->is_unix = true;
    a->path = strdup (s + 5);
    if (!a->path || !a->path[0])
      usage_error ("%s %s: the unix socket path is empty", opt, s);
    if (strlen (a->path) >= sizeof sun.sun_path)
      usage_error ("%s %s: a unix socket path must be shorter than %zu bytes",
                   opt, s, sizeof sun.sun_path);
  }
  else if (strncmp (s, "tcp:", 4) == 0) {
    char *host = strdup (s + 4), *port;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    int r;

    if (!host)
      usage_error ("out of memory");
    port = strrchr (host, ':');
    if (!port || port == host || !port[1])
      usage_error ("%s %s: expected tcp:HOST:PORT", opt, s);
    *port++ = '\0';
    if (host[0] == '[' && host[strlen (host) - 1] == ']') {
      memmove (host, host + 1, strlen (host));
      host[strlen (host) - 1] = '\0';
    }
    if (passive)
      hints.ai_flags = AI_PASSIVE;
    r = getaddrinfo (host, port, &hints, &a->ai);
    if (r)
      usage_error ("%s %s: %s", opt, s, gai_strerror (r));
    free (host);
  }
  else
    usage_error ("%s %s: expected unix:PATH or tcp:HOST:PORT", opt, s);
}

static void
set_nonblock (int fd)
{
  int fl = fcntl (fd, F_GETFL);

  if (fl >= 0)
    fcntl (fd, F_SETFL, fl | O_NONBLOCK);
}

static void
set_nodelay (int fd)
{
  int one = 1;

  setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* fails on unix sockets: fine */
}

/* Close with RST (TCP), or plainly (unix). */
static void
close_reset (int fd)
{
  struct linger lg = { .l_onoff = 1, .l_linger = 0 };

  setsockopt (fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close (fd);
}

/* ---- sockets -------------------------------------------------------------- */

static int
open_listener (void)
{
  int fd = -1, one = 1;

  if (listen_addr.is_unix) {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;

    strcpy (sun.sun_path, listen_addr.path);
    if (lstat (listen_addr.path, &st) == 0 && S_ISSOCK (st.st_mode))
      unlink (listen_addr.path);                 /* a stale socket of an earlier run */
    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind (fd, (struct sockaddr *) &sun, sizeof sun) < 0 || listen (fd, 64) < 0) {
      msg ("cannot listen on %s: %s", listen_addr.text, strerror (errno));
      exit (1);
    }
  }
  else {
    struct addrinfo *ai;
    int err = 0;

    for (ai = listen_addr.ai; ai; ai = ai->ai_next) {
      fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) {
        err = errno;
        continue;
      }
      setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (bind (fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen (fd, 64) == 0)
        break;
      err = errno;
      close (fd);
      fd = -1;
    }
    if (fd < 0) {
      msg ("cannot listen on %s: %s", listen_addr.text, strerror (err));
      exit (1);
    }
  }
  set_nonblock (fd);
  return fd;
}

/* A blocking connect to the target, then non-blocking.  -> fd or -1. */
static int
connect_target (void)
{
  int fd = -1, err = 0;

  if (target_addr.is_unix) {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    strcpy (sun.sun_path, target_addr.path);
    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect (fd, (struct sockaddr *) &sun, sizeof sun) < 0) {
      err = errno;
      close (fd);
      fd = -1;
    }
    else if (fd < 0)
      err = errno;
  }
  else {
    struct addrinfo *ai;

    for (ai = target_addr.ai; ai; ai = ai->ai_next) {
      fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) {
        err = errno;
        continue;
      }
      if (connect (fd, ai->ai_addr, ai->ai_addrlen) == 0)
        break;
      err = errno;
      close (fd);
      fd = -1;
    }
  }
  if (fd < 0) {
    msg ("connect to %s: %s", target_addr.text, strerror (err));
    return -1;
  }
  set_nonblock (fd);
  set_nodelay (fd);
  return fd;
}

/* ---- connections ------------------------------------------------------------ */

static void
link_unlink (struct link *L, struct chunk *ch)
{
  if (ch->lprev)
    ch->lprev->lnext = ch->lnext;
  else
    L->head = ch->lnext;
  if (ch->lnext)
    ch->lnext->lprev = ch->lprev;
  else
    L->tail = ch->lprev;
  ch->lprev = ch->lnext = NULL;
}

/* Close both sockets and drop what is queued; the conn is freed by reap(). */
static void
conn_close (struct conn *c, bool reset, const char *why)
{
  int d;

  if (c->closed)
    return;
  for (d = 0; d < 2; d++) {
    struct half *h = &c->h[d];
    struct chunk *ch, *nx;

    for (ch = h->head; ch; ch = nx) {
      nx = ch->next;
      if (!ch->sent)
        link_unlink (&link_[d], ch);
      link_[d].queued -= ch->len - ch->off;
      free (ch);
    }
    h->head = h->tail = NULL;
  }
  if (reset) {
    close_reset (c->fd[0]);
    close_reset (c->fd[1]);
  }
  else {
    close (c->fd[0]);
    close (c->fd[1]);
  }
  c->closed = true;
  n_active--;
  if (why)
    msg ("connection %u: %s", c->id, why);
}

static void
reap (void)
{
  struct conn **pp = &conns, *c;

  while ((c = *pp)) {
    if (!c->closed && c->h[UP].done && c->h[DOWN].done)
      conn_close (c, false, NULL);
    if (c->closed) {
      *pp = c->next;
      free (c);
    }
    else
      pp = &c->next;
  }
}

static void
accept_all (int lfd)
{
  for (;;) {
    int cfd = accept4 (lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), tfd;
    struct conn *c;

    if (cfd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
        msg ("accept: %s", strerror (errno));
      return;
    }
    n_accepted++;
    if (down && reset_mode) {                /* the link is down: no connection */
      close_reset (cfd);
      n_resets++;
      continue;
    }
    set_nodelay (cfd);
    tfd = connect_target ();
    if (tfd < 0) {
      close_reset (cfd);
      n_connect_errors++;
      continue;
    }
    c = calloc (1, sizeof *c);
    if (!c) {
      msg ("out of memory");
      close (cfd);
      close (tfd);
      continue;
    }
    c->id = next_id++;
    c->fd[0] = cfd;
    c->fd[1] = tfd;
    c->h[UP].src = cfd;
    c->h[UP].dst = tfd;
    c->h[DOWN].src = tfd;
    c->h[DOWN].dst = cfd;
    c->next = conns;
    conns = c;
    n_active++;
  }
}

/* Queue a chunk read from h's source (len 0 with eof: the end of its stream). */
static bool
enqueue (struct conn *c, int d, const unsigned char *buf, size_t len, bool eof)
{
  struct half *h = &c->h[d];
  struct link *L = &link_[d];
  struct chunk *ch = malloc (sizeof *ch + len);

  if (!ch) {
    conn_close (c, true, "out of memory");
    return false;
  }
  memset (ch, 0, sizeof *ch);
  memcpy (ch->data, buf, len);
  ch->c = c;
  ch->dir = d;
  ch->eof = eof;
  ch->len = len;
  ch->arrival = now_s ();
  if (h->tail)
    h->tail->next = ch;
  else
    h->head = ch;
  h->tail = ch;
  ch->lprev = L->tail;
  if (L->tail)
    L->tail->lnext = ch;
  else
    L->head = ch;
  L->tail = ch;
  L->read += len;
  L->queued += len;
  return true;
}

static void
read_half (struct conn *c, int d)
{
  static unsigned char buf[READ_MAX];
  struct half *h = &c->h[d];
  ssize_t n = recv (h->src, buf, sizeof buf, MSG_DONTWAIT);
  char why[160];

  if (n > 0)
    enqueue (c, d, buf, (size_t) n, false);
  else if (n == 0) {
    h->eof_read = true;
    enqueue (c, d, buf, 0, true);
  }
  else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    snprintf (why, sizeof why, "read (%s): %s", dir_name[d], strerror (errno));
    conn_close (c, true, why);
  }
}

/* The link of direction d sends what has arrived, up to HORIZON ahead. */
static void
link_send (int d, double now)
{
  struct link *L = &link_[d];
  struct chunk *ch;

  if (down)
    return;
  while ((ch = L->head)) {
    struct half *h = &ch->c->h[d];
    double start = ch->arrival > L->free_at ? ch->arrival : L->free_at;

    if (start > now + HORIZON)
      break;
    L->free_at = start + (rate > 0 ? (double) ch->len * 8.0 / rate : 0);
    ch->deliver_at = L->free_at + delay;
    if (ch->deliver_at < h->last_deliver)       /* the delay shrank: keep byte order */
      ch->deliver_at = h->last_deliver;
    h->last_deliver = ch->deliver_at;
    ch->sent = true;
    link_unlink (L, ch);
  }
}

/* Write out what is due on half d of c. */
static void
deliver (struct conn *c, int d, double now)
{
  struct half *h = &c->h[d];
  struct link *L = &link_[d];
  struct chunk *ch;
  char why[160];

  while (!c->closed && !h->blocked && (ch = h->head) && ch->sent && ch->deliver_at <= now) {
    if (ch->eof) {
      shutdown (h->dst, SHUT_WR);              /* fails if the peer is gone: fine */
      h->done = true;
    }
    else {
      ssize_t n = send (h->dst, ch->data + ch->off, ch->len - ch->off, MSG_DONTWAIT | MSG_NOSIGNAL);

      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          h->blocked = true;
        else if (errno != EINTR) {
          snprintf (why, sizeof why, "write (%s): %s", dir_name[d], strerror (errno));
          conn_close (c, true, why);
        }
        return;
      }
      ch->off += (size_t) n;
      L->written += (uint64_t) n;
      L->queued -= (uint64_t) n;
      if (ch->off < ch->len)
        continue;
    }
    h->head = ch->next;
    if (!h->head)
      h->tail = NULL;
    free (ch);
  }
}

/* ---- files: delay, down, stats, pid ---------------------------------------- */

static void
check_files (void)
{
  if (delay_file) {
    FILE *f = fopen (delay_file, "r");

    if (!f)
      delay = base_delay;
    else {
      char buf[64] = "";
      size_t n = fread (buf, 1, sizeof buf - 1, f);
      double v;

      fclose (f);
      buf[n] = '\0';
      while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
      if (n == 0)
        ;                                       /* being written: keep the delay */
      else if ((v = parse_duration (buf)) >= 0) {
        delay = v;
        delay_file_bad[0] = '\0';
      }
      else if (strcmp (buf, delay_file_bad) != 0) {
        msg ("%s: '%s' is not a duration (e.g. 50ms): the delay stays %.3f ms",
             delay_file, buf, delay * 1e3);
        snprintf (delay_file_bad, sizeof delay_file_bad, "%s", buf);
      }
    }
  }
  if (down_file) {
    bool now_down = access (down_file, F_OK) == 0;

    if (now_down && !down) {
      msg ("link down (%s exists)%s", down_file, reset_mode ? ": connections reset" : "");
      if (reset_mode) {
        struct conn *c;

        for (c = conns; c; c = c->next)
          if (!c->closed) {
            conn_close (c, true, "reset: the link is down");
            n_resets++;
          }
      }
    }
    else if (!now_down && down) {
      double t = now_s ();

      msg ("link up");
      link_[UP].free_at = link_[DOWN].free_at = t;    /* the link starts sending now */
    }
    down = now_down;
  }
}

static void
write_stats (double now)
{
  char tmp[4096 + 8], line[2048];
  FILE *f;

  if (!stats_file)
    return;
  n_stats++;
  snprintf (line, sizeof line,
            "n=%llu t=%.3f connections=%llu active=%llu up_read=%llu up_written=%llu "
            "down_read=%llu down_written=%llu up_queued=%llu down_queued=%llu "
            "delay_us=%.0f rate_bps=%.0f down=%d resets=%llu connect_errors=%llu\n",
            (unsigned long long) n_stats, now - t_start,
            (unsigned long long) n_accepted, (unsigned long long) n_active,
            (unsigned long long) link_[UP].read, (unsigned long long) link_[UP].written,
            (unsigned long long) link_[DOWN].read, (unsigned long long) link_[DOWN].written,
            (unsigned long long) link_[UP].queued, (unsigned long long) link_[DOWN].queued,
            delay * 1e6, rate, down ? 1 : 0,
            (unsigned long long) n_resets, (unsigned long long) n_connect_errors);
  snprintf (tmp, sizeof tmp, "%.4096s.tmp", stats_file);
  f = fopen (tmp, "w");
  if (!f || fputs (line, f) == EOF || fclose (f) != 0 || rename (tmp, stats_file) < 0) {
    static bool said;

    if (!said)
      msg ("cannot write the stats file %s: %s", stats_file, strerror (errno));
    said = true;
  }
}

static void
write_pidfile (void)
{
  char tmp[4096 + 8];
  FILE *f;

  snprintf (tmp, sizeof tmp, "%.4096s.tmp", pid_file);
  f = fopen (tmp, "w");
  if (!f || fprintf (f, "%d\n", (int) getpid ()) < 0 || fclose (f) != 0 || rename (tmp, pid_file) < 0) {
    msg ("cannot write the pidfile %s: %s", pid_file, strerror (errno));
    exit (1);
  }
}

static void
on_signal (int sig)
{
  if (sig == SIGUSR1)
    got_usr1 = 1;
  else
    got_stop = 1;
}

/* ---- main ------------------------------------------------------------------- */

int
main (int argc, char **argv)
{
  static const struct option opts[] = {
    { "listen", required_argument, NULL, 'l' },
    { "connect", required_argument, NULL, 'c' },
    { "delay", required_argument, NULL, 'd' },
    { "rate", required_argument, NULL, 'r' },
    { "queue", required_argument, NULL, 'q' },
    { "stats", required_argument, NULL, 's' },
    { "delay-file", required_argument, NULL, 'D' },
    { "down-file", required_argument, NULL, 'X' },
    { "down-mode", required_argument, NULL, 'M' },
    { "pidfile", required_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *listen_s = NULL, *connect_s = NULL;
  struct pollfd *pfd = NULL;
  struct conn **pconn = NULL;
  size_t cap = 0;
  struct sigaction sa;
  sigset_t block, orig;
  double next_file = 0, next_stats;
  int lfd, o, d;

  opterr = 0;
  while ((o = getopt_long (argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'l': listen_s = optarg; break;
    case 'c': connect_s = optarg; break;
    case 'd':
      base_delay = parse_duration (optarg);
      if (base_delay < 0)
        usage_error ("--delay %s: not a duration (a number with us, ms or s, e.g. 10ms; at most 3600s)", optarg);
      break;
    case 'r':
      rate = parse_rate (optarg);
      if (rate < 0)
        usage_error ("--rate %s: not a rate in bit/s (a number with an optional k, M or G, e.g. 100M; 0 = unlimited)", optarg);
      if (rate > 0 && rate < 8000)
        usage_error ("--rate %s: below 8 kbit/s (the rate is in bit/s)", optarg);
      break;
    case 'q':
      queue_limit = parse_size (optarg);
      if (queue_limit < READ_MAX)
        usage_error ("--queue %s: not a size of at least 64K (a number with an optional K, M or G)", optarg);
      break;
    case 's': stats_file = optarg; break;
    case 'D': delay_file = optarg; break;
    case 'X': down_file = optarg; break;
    case 'M':
      if (strcmp (optarg, "reset") == 0)
        reset_mode = true;
      else if (strcmp (optarg, "hold") == 0)
        reset_mode = false;
      else
        usage_error ("--down-mode %s: expected hold or reset", optarg);
      break;
    case 'p': pid_file = optarg; break;
    case 'h': usage (); return 0;
    default:
      usage_error ("option %s: unknown, or its value is missing", argv[optind - 1]);
    }
  }
  if (optind < argc)
    usage_error ("unexpected argument '%s'", argv[optind]);
  if (!listen_s)
    usage_error ("--listen is required (unix:PATH or tcp:HOST:PORT)");
  if (!connect_s)
    usage_error ("--connect is required (unix:PATH or tcp:HOST:PORT)");
  if (reset_mode && !down_file)
    usage_error ("--down-mode reset needs --down-file");
  parse_addr ("--listen", listen_s, &listen_addr, true);
  parse_addr ("--connect", connect_s, &target_addr, false);
  delay = base_delay;

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGUSR1, &sa, NULL);
  signal (SIGPIPE, SIG_IGN);
  /* The signals interrupt only ppoll (which unblocks them): no lost wake-up. */
  sigemptyset (&block);
  sigaddset (&block, SIGTERM);
  sigaddset (&block, SIGINT);
  sigaddset (&block, SIGUSR1);
  sigprocmask (SIG_BLOCK, &block, &orig);
  sigdelset (&orig, SIGTERM);
  sigdelset (&orig, SIGINT);
  sigdelset (&orig, SIGUSR1);

  lfd = open_listener ();
  t_start = now_s ();
  write_stats (t_start);                        /* the stats file exists once ready */
  next_stats = t_start + STATS_EVERY;
  if (pid_file)
    write_pidfile ();
  msg ("listening on %s, target %s, delay %.3f ms, rate %.0f bit/s (0: unlimited), queue %llu bytes",
       listen_addr.text, target_addr.text, base_delay * 1e3, rate, (unsigned long long) queue_limit);

  while (!got_stop) {
    double now = now_s (), next;
    struct timespec ts;
    struct conn *c;
    size_t n = 0, i;
    int r;

    if (now >= next_file) {
      check_files ();
      next_file = now + FILE_CHECK;
    }
    for (d = 0; d < 2; d++)
      link_send (d, now);
    if (!down)
      for (c = conns; c; c = c->next)
        for (d = 0; d < 2; d++)
          deliver (c, d, now);
    reap ();
    if (got_usr1 || now >= next_stats) {
      write_stats (now);
      got_usr1 = 0;
      next_stats = now + STATS_EVERY;
    }

    /* what to wait for */
    next = next_file < next_stats ? next_file : next_stats;
    for (d = 0; d < 2 && !down; d++) {
      struct chunk *ch = link_[d].head;

      if (ch) {
        double start = ch->arrival > link_[d].free_at ? ch->arrival : link_[d].free_at;
        if (start - HORIZON < next)
          next = start - HORIZON;
      }
    }
    if (cap < 1 + 2 * n_active) {
      cap = 2 * (1 + 2 * n_active);
      pfd = realloc (pfd, cap * sizeof *pfd);
      pconn = realloc (pconn, cap * sizeof *pconn);
      if (!pfd || !pconn) {
        msg ("out of memory");
        return 1;
      }
    }
    pfd[n].fd = lfd;
    pfd[n].events = POLLIN;
    pconn[n++] = NULL;
    for (c = conns; c; c = c->next) {
      for (d = 0; d < 2; d++) {
        struct half *h = &c->h[d], *other = &c->h[!d];
        short ev = 0;

        /* fd[d] is the source of half d and the destination of the other half */
        if (!h->eof_read && link_[d].queued < queue_limit)
          ev |= POLLIN;
        if (other->blocked)
          ev |= POLLOUT;
        else if (!down && other->head && other->head->sent && other->head->deliver_at < next)
          next = other->head->deliver_at;
        pfd[n].fd = ev ? c->fd[d] : -1;          /* no events: not even POLLHUP */
        pfd[n].events = ev;
        pfd[n].revents = 0;
        pconn[n++] = c;
      }
    }
    now = now_s ();
    if (next < now)
      next = now;
    ts.tv_sec = (time_t) (next - now);
    ts.tv_nsec = (long) ((next - now - (double) ts.tv_sec) * 1e9);
    r = ppoll (pfd, n, &ts, &orig);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      msg ("ppoll: %s", strerror (errno));
      break;
    }
    if (r == 0)
      continue;
    for (i = 1; i < n; i++) {
      int fdi = (int) ((i - 1) % 2);          /* which of the conn's two fds */

      c = pconn[i];
      if (c->closed || !pfd[i].revents)
        continue;
      if (pfd[i].revents & POLLOUT)
        c->h[!fdi].blocked = false;
      if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        if (pfd[i].events & POLLIN)
          read_half (c, fdi);
        else if (pfd[i].revents & (POLLHUP | POLLERR))
          c->h[!fdi].blocked = false;         /* the write then says what happened */
      }
    }
    if (pfd[0].revents & POLLIN)
      accept_all (lfd);
  }

  write_stats (now_s ());
  {
    struct conn *c;

    for (c = conns; c; c = c->next)
      conn_close (c, false, NULL);
    reap ();
  }
  close (lfd);
  if (listen_addr.is_unix)
    unlink (listen_addr.path);
  if (pid_file)
    unlink (pid_file);
  msg ("exit: up %llu bytes, down %llu bytes written, %llu connections",
       (unsigned long long) link_[UP].written, (unsigned long long) link_[DOWN].written,
       (unsigned long long) n_accepted);
  free (pfd);
  free (pconn);
  return 0;
}
