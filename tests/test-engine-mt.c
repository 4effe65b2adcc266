/* The engine in-process under concurrent load, without nbdkit in between:
 * the calls the nbdkit plugin makes (configuration, replicator_new, the
 * control socket, replicator_start, rdev_* I/O from several threads at
 * once, rdev_flush, control_stop, replicator_stop, replicator_free), made
 * from this program's own threads so that ThreadSanitizer can watch every
 * thread of the engine (scripts/tsan.sh builds it with --enable-tsan).
 *
 * Setup: two devices of 8 MiB (legs of 9 MiB: the label area follows
 * the device) in one consistency group, one 1 MiB log (it
 * wraps many times), site 0 = local files (O_DIRECT), site 1 = a real
 * `nbdkit file dir=` on a unix socket, one export per device, async with a
 * fall_behind threshold, short disconnect_timeout and pull_ahead.
 *
 * Threads while the I/O phase runs:
 *   - NCLIENTS clients doing random writes (aligned and unaligned, some
 *     FUA), reads, write-zeroes, trims and flushes on both devices.  Each
 *     device is cut into chunks; chunk c belongs to client c % NCLIENTS,
 *     so each client's byte model of its chunks is exact and every read
 *     of its own chunks must return exactly the model (read your writes).
 *     Every other chunk of a client is "structured": written in whole
 *     512-byte sectors that each carry (device, sector, writer, write id)
 *     and a body derived from them.  Clients also read other clients'
 *     structured chunks: each sector must be zeroes or a version its owner
 *     really wrote (a known write id, an intact body), nothing else;
 *   - a control client that talks to the control socket as replctl does:
 *     status all the time, an error case, pause/resume of site 1 (the log
 *     fills meanwhile: pull-ahead moves the site to dirty-log mode and it
 *     is resynchronised after the resume), a policy change to sync and
 *     back, a verify while clients write;
 *   - the engine's own: the log syncer, the site 0 and site 1 workers, the
 *     connectors of the two remote legs, the control socket thread, the
 *     verify thread.
 *
 * Pass 1 uses io_uring (when the kernel allows it) and starts nbdkit only
 * after the engine has started: site 1 starts disconnected and the
 * connector threads bring it in while clients write.  Pass 2 reopens the
 * same log and legs (recovery) with the thread-pool engine
 * (NBD_REPLICATOR_NO_URING=1) and nbdkit up from the start; nbdkit is
 * killed (kill -9) and restarted while site 1 runs at policy sync, so
 * the connections drop and the connectors reconnect.  After each
 * pass: a final flush, wait until site 1 is back in log mode with nothing
 * pending, verify both devices at site 1 through the control socket (no
 * region may differ), read both devices back whole, stop, then the local
 * files and the files behind nbdkit must equal the model byte for byte.
 *
 * Environment: TEST_SEED (random seed, printed), TEST_ENGINE_MT_SECONDS
 * (I/O phase per pass, default 4), TEST_ENGINE_MT_KEEP=1 (keep the
 * temporary directory).  Exit 77 (skip) without nbdkit or libnbd.
 */
#include <config.h>
#undef NDEBUG
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cfg.h"
#include "control.h"
#include "replicator.h"
#include "report.h"

#define NCLIENTS   4
#define NDEV       2
#define DEV_SIZE   (8u << 20)
#define LEG_SIZE   (DEV_SIZE + (1u << 20))   /* a leg: the device and its label area */
#define CHUNK      (256u << 10)
#define NCHUNK     (DEV_SIZE / CHUNK)
#define SECTOR     512u
#define LOG_SIZE   "1M"
#define SECT_MAGIC UINT64_C (0x54534d2d454e4731)   /* "1GNE-MST" */
#define MAX_MSGS   30

extern char **environ;

#ifdef __SANITIZE_THREAD__
#include <sanitizer/common_interface_defs.h>
/* Under ThreadSanitizer (configure --enable-tsan) the first report fails
 * the test at once with exit status 66, however it is run; TSAN_OPTIONS
 * still overrides (scripts/tsan.sh adds the suppressions file). */
const char *__tsan_default_options (void);
const char *
__tsan_default_options (void)
{
  return "halt_on_error=1:exitcode=66:second_deadlock_stack=1";
}
#endif

/* ---- shared state (atomics only while threads run) ---------------------------------- */

static char dir[] = "/tmp/tem.XXXXXX";
static char ctl_path[100], nbd_sock[100], nbd_pidf[128], nbd_log[128];
static struct replicator *rep;
static struct vdev *devs[NDEV];
static uint8_t *model[NDEV];         /* bytes a chunk holds; written by its owner only */
static uint32_t max_write;           /* largest single request we send */
static int io_stop, ctl_stop, failures, msgs;
static uint64_t seed;
static double t_start;               /* of the program, for messages */
static pid_t nbd_pid = -1;

struct client {
  unsigned id;
  pthread_t thread;
  uint64_t rng;
  uint64_t wid;                      /* newest structured write id issued (atomic) */
  uint64_t writes, reads, xreads, xsectors, zeroes, trims, flushes, bytes;
};
static struct client clients[NCLIENTS];

struct ctl_stats {
  unsigned status, pauses, resumes, policies, verifies, verify_refused, paused_seen, errors_ok;
};

static double
now_s (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void
fail (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static void
fail (const char *fmt, ...)
{
  va_list ap;
  __atomic_add_fetch (&failures, 1, __ATOMIC_SEQ_CST);
  if (__atomic_add_fetch (&msgs, 1, __ATOMIC_SEQ_CST) > MAX_MSGS)
    return;
  va_start (ap, fmt);
  fprintf (stderr, "[%7.3f] FAIL: ", now_s () - t_start);
  vfprintf (stderr, fmt, ap);
  fprintf (stderr, "\n");
  va_end (ap);
}

static void
note (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static void
note (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  printf ("[%7.3f] ", now_s () - t_start);
  vprintf (fmt, ap);
  printf ("\n");
  fflush (stdout);
  va_end (ap);
}

/* The engine's messages, time-stamped (several threads print). */
static void
sink (const char *kind, const char *fmt, va_list ap)
{
  char line[1024];
  vsnprintf (line, sizeof line, fmt, ap);
  fprintf (stderr, "[%7.3f] engine %s: %s\n", now_s () - t_start, kind, line);
}
static void sink_error (const char *fmt, va_list ap) { sink ("error", fmt, ap); }
static void sink_info (const char *fmt, va_list ap) { sink ("info", fmt, ap); }
static void sink_debug (const char *fmt, va_list ap) { (void) fmt; (void) ap; }

static void
sleep_s (double s)
{
  struct timespec ts;
  if (s <= 0)
    return;
  ts.tv_sec = (time_t) s;
  ts.tv_nsec = (long) ((s - (double) ts.tv_sec) * 1e9);
  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* ---- random numbers and the sector format ------------------------------------------ */

static uint64_t
rnd (uint64_t *s)
{
  uint64_t x = *s;                   /* xorshift64* */
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * UINT64_C (0x2545F4914F6CDD1D);
}

static uint64_t
mix (uint64_t x)
{
  x += UINT64_C (0x9E3779B97F4A7C15); /* splitmix64 */
  x = (x ^ (x >> 30)) * UINT64_C (0xBF58476D1CE4E5B9);
  x = (x ^ (x >> 27)) * UINT64_C (0x94D049BB133111EB);
  return x ^ (x >> 31);
}

static unsigned
chunk_owner (uint64_t off)
{
  return (unsigned) ((off / CHUNK) % NCLIENTS);
}

static bool
chunk_structured (uint64_t off)
{
  return (off / CHUNK / NCLIENTS) % 2 == 0;
}

static void
put64 (uint8_t *p, uint64_t v)
{
  memcpy (p, &v, 8);
}

static uint64_t
get64 (const uint8_t *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return v;
}

/* Sector `sector` of device `dev` as written by write `wid`. */
static void
make_sector (uint8_t *p, unsigned dev, uint64_t sector, uint64_t wid)
{
  uint64_t h = mix (wid ^ mix (sector ^ ((uint64_t) dev << 56)));
  unsigned i;
  put64 (p, SECT_MAGIC);
  put64 (p + 8, sector | ((uint64_t) dev << 56));
  put64 (p + 16, wid);
  for (i = 24; i < SECTOR; i++)
    p[i] = (uint8_t) ((h >> ((i & 7) * 8)) + i);
}

/* A sector read from another client's structured chunk: zeroes, or a
 * version its owner wrote.  NULL if fine, else what is wrong. */
static const char *
check_sector (const uint8_t *p, unsigned dev, uint64_t sector)
{
  static const uint8_t zero[SECTOR];
  uint8_t want[SECTOR];
  unsigned owner = chunk_owner (sector * SECTOR);
  uint64_t wid;

  if (memcmp (p, zero, SECTOR) == 0)
    return NULL;
  if (get64 (p) != SECT_MAGIC)
    return "neither zeroes nor a sector we wrote (bad magic)";
  if (get64 (p + 8) != (sector | ((uint64_t) dev << 56)))
    return "a sector of another place (device or sector number differs)";
  wid = get64 (p + 16);
  if ((unsigned) (wid >> 40) != owner)
    return "a write id of a client that does not own the chunk";
  /* The owner counts a write id before sending it, we look after the read. */
  if ((wid & ((UINT64_C (1) << 40) - 1)) > __atomic_load_n (&clients[owner].wid, __ATOMIC_ACQUIRE))
    return "a write id that was never issued";
  make_sector (want, dev, sector, wid);
  if (memcmp (p, want, SECTOR) != 0)
    return "a torn or corrupt sector (body does not match its header)";
  return NULL;
}

/* ---- the clients ------------------------------------------------------------------- */

/* A random range inside a random chunk of client c with the given kind. */
static void
pick_range (struct client *c, unsigned *dev, uint64_t *off, uint32_t *len, bool *structured,
            uint32_t maxlen)
{
  unsigned k = (unsigned) (rnd (&c->rng) % (NCHUNK / NCLIENTS));
  uint64_t base = ((uint64_t) k * NCLIENTS + c->id) * CHUNK;
  uint32_t l, unit;
  uint64_t r = rnd (&c->rng);

  *dev = (unsigned) (rnd (&c->rng) % NDEV);
  *structured = chunk_structured (base);
  unit = *structured ? SECTOR : 1;
  if (maxlen > CHUNK)
    maxlen = CHUNK;
  /* mostly small, some up to maxlen */
  if (r % 4 == 0)
    l = (uint32_t) (rnd (&c->rng) % maxlen) + 1;
  else
    l = (uint32_t) (rnd (&c->rng) % 8192) + 1;
  l = (l + unit - 1) / unit * unit;
  if (l > maxlen)
    l = maxlen / unit * unit;
  *off = base + (rnd (&c->rng) % ((CHUNK - l) / unit + 1)) * unit;
  *len = l;
}

static void
do_write (struct client *c, uint8_t *buf)
{
  unsigned dev;
  uint64_t off, i;
  uint32_t len;
  bool st, fua = rnd (&c->rng) % 8 == 0;

  /* a few writes longer than the engine's largest request (it splits them) */
  pick_range (c, &dev, &off, &len, &st, rnd (&c->rng) % 16 == 0 ? 2 * max_write : max_write);
  if (st) {
    uint64_t wid = ((uint64_t) c->id << 40) |
      __atomic_add_fetch (&c->wid, 1, __ATOMIC_SEQ_CST);
    for (i = 0; i < len; i += SECTOR)
      make_sector (buf + i, dev, (off + i) / SECTOR, wid);
  }
  else
    for (i = 0; i < len; i += 8) {
      uint64_t v = rnd (&c->rng);
      memcpy (buf + i, &v, len - i < 8 ? len - i : 8);
    }
  if (rdev_pwrite (devs[dev], buf, len, off, fua) != 0) {
    fail ("client %u: write of %u bytes at %" PRIu64 " on d%u failed: %s", c->id, len, off, dev,
          strerror (errno));
    return;
  }
  memcpy (model[dev] + off, buf, len);
  c->writes++;
  c->bytes += len;
}

static void
do_zero (struct client *c, bool trim)
{
  unsigned dev;
  uint64_t off;
  uint32_t len;
  bool st, fua = rnd (&c->rng) % 8 == 0, may_trim = rnd (&c->rng) % 2 == 0;
  int r;

  pick_range (c, &dev, &off, &len, &st, CHUNK);
  r = trim ? rdev_trim (devs[dev], len, off, fua) : rdev_zero (devs[dev], len, off, may_trim, fua);
  if (r != 0) {
    fail ("client %u: %s of %u bytes at %" PRIu64 " on d%u failed: %s", c->id,
          trim ? "trim" : "zero", len, off, dev, strerror (errno));
    return;
  }
  memset (model[dev] + off, 0, len);
  if (trim)
    c->trims++;
  else
    c->zeroes++;
}

static void
report_diff (const char *who, unsigned dev, uint64_t off, const uint8_t *got, const uint8_t *want,
             uint32_t len)
{
  uint32_t i, n = 0;
  for (i = 0; i < len && got[i] == want[i]; i++)
    ;
  while (i + n < len && got[i + n] != want[i + n])
    n++;
  fail ("%s: d%u at %" PRIu64 ": %u bytes differ from the model at offset %" PRIu64
        " (got %02x, want %02x)", who, dev, off, n, off + i, got[i], want[i]);
}

static void
do_read_own (struct client *c, uint8_t *buf)
{
  unsigned dev;
  uint64_t off;
  uint32_t len;
  bool st;
  char who[32];

  pick_range (c, &dev, &off, &len, &st, max_write);
  if (rdev_pread (devs[dev], buf, len, off) != 0) {
    fail ("client %u: read of %u bytes at %" PRIu64 " on d%u failed: %s", c->id, len, off, dev,
          strerror (errno));
    return;
  }
  if (memcmp (buf, model[dev] + off, len) != 0) {
    snprintf (who, sizeof who, "client %u: read", c->id);
    report_diff (who, dev, off, buf, model[dev] + off, len);
  }
  c->reads++;
}

/* Read a structured chunk of another client and check every sector. */
static void
do_read_other (struct client *c, uint8_t *buf)
{
  unsigned dev = (unsigned) (rnd (&c->rng) % NDEV), other, k;
  uint64_t base, off, i;
  uint32_t len;

  other = (c->id + 1 + (unsigned) (rnd (&c->rng) % (NCLIENTS - 1))) % NCLIENTS;
  k = (unsigned) (rnd (&c->rng) % (NCHUNK / NCLIENTS / 2)) * 2;   /* even k: structured */
  base = ((uint64_t) k * NCLIENTS + other) * CHUNK;
  if (!chunk_structured (base)) {
    fail ("test bug: chunk at %" PRIu64 " is not structured", base);
    return;
  }
  len = (uint32_t) ((rnd (&c->rng) % (max_write / SECTOR)) + 1) * SECTOR;
  off = base + (rnd (&c->rng) % ((CHUNK - len) / SECTOR + 1)) * SECTOR;
  if (rdev_pread (devs[dev], buf, len, off) != 0) {
    fail ("client %u: read of %u bytes at %" PRIu64 " on d%u failed: %s", c->id, len, off, dev,
          strerror (errno));
    return;
  }
  for (i = 0; i < len; i += SECTOR) {
    const char *why = check_sector (buf + i, dev, (off + i) / SECTOR);
    if (why) {
      fail ("client %u: d%u sector at %" PRIu64 " (client %u's): %s", c->id, dev, off + i,
            other, why);
      break;
    }
  }
  c->xreads++;
  c->xsectors += len / SECTOR;
}

static void *
client_thread (void *arg)
{
  struct client *c = arg;
  uint8_t *buf = malloc (2 * (size_t) max_write);

  if (!buf) {
    fail ("client %u: out of memory", c->id);
    return NULL;
  }
  while (!__atomic_load_n (&io_stop, __ATOMIC_ACQUIRE)) {
    unsigned op = (unsigned) (rnd (&c->rng) % 100);
    if (op < 40)
      do_write (c, buf);
    else if (op < 60)
      do_read_own (c, buf);
    else if (op < 74)
      do_read_other (c, buf);
    else if (op < 84)
      do_zero (c, false);
    else if (op < 90)
      do_zero (c, true);
    else if (op < 94) {
      if (rdev_flush (rep) != 0)
        fail ("client %u: flush failed: %s", c->id, strerror (errno));
      c->flushes++;
    }
    else {
      /* any chunk of another client, raw ones too: not checked (its owner
       * may be writing it), only that the read works */
      unsigned dev = (unsigned) (rnd (&c->rng) % NDEV);
      uint32_t len = (uint32_t) (rnd (&c->rng) % max_write) + 1;
      uint64_t off = rnd (&c->rng) % (DEV_SIZE - len + 1);
      if (rdev_pread (devs[dev], buf, len, off) != 0)
        fail ("client %u: read of %u bytes at %" PRIu64 " on d%u failed: %s", c->id, len, off,
              dev, strerror (errno));
      c->xreads++;
    }
  }
  free (buf);
  return NULL;
}

/* ---- the control socket, as replctl uses it ------------------------------------------ */

/* Send one command line, return the reply (malloc'd) or NULL. */
static char *
ctl_cmd (const char *line)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  size_t cap = 65536, got = 0;
  char *out = malloc (cap);
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  double deadline = now_s () + 20;
  char req[512];
  size_t len;

  if (!out || fd == -1)
    goto err;
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", ctl_path);
  if (connect (fd, (struct sockaddr *) &sa, sizeof sa) == -1)
    goto err;
  len = (size_t) snprintf (req, sizeof req, "%s\n", line);
  if (send (fd, req, len, MSG_NOSIGNAL) != (ssize_t) len)
    goto err;
  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t r;
    if (now_s () > deadline || poll (&p, 1, 1000) < 0)
      goto err;
    if (!p.revents)
      continue;
    if (got + 4096 > cap) {
      char *n = realloc (out, cap * 2);
      if (!n)
        goto err;
      out = n;
      cap *= 2;
    }
    r = read (fd, out + got, cap - got - 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += (size_t) r;
  }
  close (fd);
  out[got] = 0;
  if (got == 0) {
    free (out);
    return NULL;
  }
  return out;
 err:
  if (fd != -1)
    close (fd);
  free (out);
  return NULL;
}

static json_object *
ctl_json (const char *line)
{
  char *s = ctl_cmd (line);
  json_object *o;
  if (!s)
    return NULL;
  o = json_tokener_parse (s);
  if (!o)
    fail ("control: reply to '%s' is not JSON: %.200s", line, s);
  free (s);
  return o;
}

static json_object *
jget (json_object *o, const char *k)
{
  json_object *v = NULL;
  if (!o || !json_object_object_get_ex (o, k, &v))
    return NULL;
  return v;
}

static const char *
jstr (json_object *o, const char *k)
{
  json_object *v = jget (o, k);
  return v && json_object_is_type (v, json_type_string) ? json_object_get_string (v) : "";
}

static int64_t
jint (json_object *o, const char *k)
{
  json_object *v = jget (o, k);
  return v ? json_object_get_int64 (v) : -1;
}

static bool
jbool (json_object *o, const char *k)
{
  json_object *v = jget (o, k);
  return v && json_object_get_boolean (v);
}

static json_object *
site_of (json_object *st, int id)
{
  json_object *a = jget (st, "sites");
  size_t i;
  for (i = 0; a && i < json_object_array_length (a); i++) {
    json_object *s = json_object_array_get_idx (a, i);
    if (jint (s, "id") == id)
      return s;
  }
  return NULL;
}

/* A command that must be accepted ({"ok": true}). */
static bool
ctl_ok (const char *line)
{
  json_object *o = ctl_json (line);
  bool ok = o && jbool (o, "ok");
  if (!ok)
    fail ("control: '%s' refused: %s", line, o ? jstr (o, "error") : "(no reply)");
  if (o)
    json_object_put (o);
  return ok;
}

struct ctl_args {
  double io_secs;
  struct ctl_stats st;
};

static void *
control_client_thread (void *arg)
{
  struct ctl_args *a = arg;
  double t0 = now_s ();
  int step = 0;                      /* 0 pause, 1 resume, 2 sync, 3 async, 4 verify, 5 done */
  bool paused = false;

  while (!__atomic_load_n (&ctl_stop, __ATOMIC_ACQUIRE)) {
    double t = (now_s () - t0) / a->io_secs;
    json_object *st = ctl_json ("status");
    json_object *s1;

    if (!st || !jget (st, "engine") || !jget (st, "log") || !(s1 = site_of (st, 1)))
      fail ("control: status has no engine, log or site 1");
    else {
      a->st.status++;
      if (paused && !strcmp (jstr (s1, "link"), "paused"))
        a->st.paused_seen++;
      if (strcmp (jstr (jget (st, "log"), "health"), "ok") != 0)
        fail ("control: log health is %s", jstr (jget (st, "log"), "health"));
    }
    if (st)
      json_object_put (st);

    if (step == 0 && t >= 0.30) {
      /* errors first: an unknown site, a pause of site 0 */
      json_object *e1 = ctl_json ("{\"cmd\": \"pause\", \"site\": 7}");
      json_object *e2 = ctl_json ("{\"cmd\": \"pause\", \"site\": 0}");
      if (e1 && jget (e1, "error") && e2 && jget (e2, "error"))
        a->st.errors_ok++;
      else
        fail ("control: pause of an unknown site or of site 0 was not refused");
      if (e1)
        json_object_put (e1);
      if (e2)
        json_object_put (e2);
      if (ctl_ok ("{\"cmd\": \"pause\", \"site\": 1}")) {
        a->st.pauses++;
        paused = true;
      }
      step++;
    }
    else if (step == 1 && t >= 0.55) {
      if (ctl_ok ("{\"cmd\": \"resume\", \"site\": 1}"))
        a->st.resumes++;
      paused = false;
      step++;
    }
    else if (step == 2 && t >= 0.65) {
      if (ctl_ok ("{\"cmd\": \"policy\", \"site\": 1, \"policy\": \"sync\"}"))
        a->st.policies++;
      step++;
    }
    else if (step == 3 && t >= 0.78) {
      if (ctl_ok ("{\"cmd\": \"policy\", \"site\": 1, \"policy\": \"async\", \"fall_behind\": \"ios 500\"}"))
        a->st.policies++;
      step++;
    }
    else if (step == 4 && t >= 0.82) {
      /* refused while site 1 is still dirty or resyncing: fine */
      json_object *o = ctl_json ("{\"cmd\": \"verify\", \"device\": \"d1\", \"site\": 1}");
      if (o && jbool (o, "ok"))
        a->st.verifies++;
      else if (o && jget (o, "error"))
        a->st.verify_refused++;
      else
        fail ("control: no answer to verify");
      if (o)
        json_object_put (o);
      step++;
    }
    sleep_s (0.02);
  }
  return NULL;
}

/* ---- nbdkit --------------------------------------------------------------------------- */

static bool
have_nbdkit (void)
{
  return system ("nbdkit --version >/dev/null 2>&1") == 0;
}

/* Start nbdkit serving dir/r/ (one export per file).  Called from the main
 * thread only: Debian's nbdkit dies with the thread that started it
 * (PR_SET_PDEATHSIG).  posix_spawn, not fork, in a threaded program. */
static int
nbdkit_start (void)
{
  char rdir[160], dirarg[180];
  char *argv[] = { "nbdkit", "-f", "-U", nbd_sock, "-P", nbd_pidf, "file", dirarg, NULL };
  posix_spawn_file_actions_t fa;
  double deadline;
  int e;

  snprintf (rdir, sizeof rdir, "%s/r", dir);
  snprintf (dirarg, sizeof dirarg, "dir=%s", rdir);
  unlink (nbd_sock);
  unlink (nbd_pidf);
  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_addopen (&fa, 1, nbd_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2 (&fa, 1, 2);
  posix_spawn_file_actions_addclosefrom_np (&fa, 3);
  e = posix_spawnp (&nbd_pid, "nbdkit", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  if (e) {
    fprintf (stderr, "posix_spawnp nbdkit: %s\n", strerror (e));
    nbd_pid = -1;
    return -1;
  }
  for (deadline = now_s () + 20; now_s () < deadline; sleep_s (0.02)) {
    struct stat sb;
    if (stat (nbd_pidf, &sb) == 0 && sb.st_size > 0)
      return 0;
    if (waitpid (nbd_pid, NULL, WNOHANG) == nbd_pid) {
      nbd_pid = -1;
      break;
    }
  }
  fprintf (stderr, "nbdkit did not start (see %s)\n", nbd_log);
  return -1;
}

static void
nbdkit_stop (void)
{
  if (nbd_pid <= 0)
    return;
  kill (nbd_pid, SIGTERM);
  waitpid (nbd_pid, NULL, 0);
  nbd_pid = -1;
}

/* ---- one pass -------------------------------------------------------------------------- */

static struct cfg *
make_cfg (void)
{
  char text[4096];
  size_t n = 0;
  unsigned i;

  n += (size_t) snprintf (text + n, sizeof text - n,
    "replog = { path = \"%s/log\"; size = \"" LOG_SIZE "\"; commit_interval = \"2ms\"; };\n"
    "sites = (\n"
    "  { id = 0; },\n"
    "  { id = 1; policy = \"async\"; fall_behind = \"ios 500\"; disconnect_timeout = \"1s\";\n"
    "    pull_ahead = \"500ms\"; queue_depth = 16; }\n"
    ");\n"
    "devices = (\n", dir);
  for (i = 0; i < NDEV; i++)
    n += (size_t) snprintf (text + n, sizeof text - n,
      "  { name = \"d%u\"; legs = (\n"
      "      { site = 0; path = \"%s/d%u.img\"; },\n"
      "      { site = 1; path = \"nbd+unix:///r%u.img?socket=%s\"; dirty_log = { sync = false; }; }\n"
      "    ); }%s\n", i, dir, i, i, nbd_sock, i + 1 < NDEV ? "," : "");
  n += (size_t) snprintf (text + n, sizeof text - n,
    ");\ncontrol = { socket = \"%s\"; };\n", ctl_path);
  if (n >= sizeof text) {
    fprintf (stderr, "config text too long\n");
    return NULL;
  }
  return cfg_load_string (text, "test-engine-mt");
}

/* Wait until site 1 holds everything: connected, log mode, no resync, no
 * dirty or in-doubt region, no backlog; every leg replicating and
 * consistent.  Returns the last status (caller frees) or NULL. */
static json_object *
wait_converged (double secs)
{
  double deadline = now_s () + secs;
  char why[256] = "no status";

  while (now_s () < deadline) {
    json_object *st = ctl_json ("status"), *s0, *s1, *ds;
    size_t i, j;
    bool ok = true;

    if (!st || !(s0 = site_of (st, 0)) || !(s1 = site_of (st, 1)) || !(ds = jget (st, "devices"))) {
      if (st)
        json_object_put (st);
      sleep_s (0.1);
      continue;
    }
    if (strcmp (jstr (s1, "link"), "connected") || strcmp (jstr (s1, "mode"), "log")) {
      snprintf (why, sizeof why, "site 1 link %s mode %s", jstr (s1, "link"), jstr (s1, "mode"));
      ok = false;
    }
    else if (jbool (jget (s1, "resync"), "active") || jint (jget (s1, "resync"), "regions_left")) {
      snprintf (why, sizeof why, "site 1 resync active %d, %" PRId64 " regions left",
                jbool (jget (s1, "resync"), "active"), jint (jget (s1, "resync"), "regions_left"));
      ok = false;
    }
    else if (jint (s1, "backlog_entries") || jint (s0, "backlog_entries")) {
      snprintf (why, sizeof why, "backlog: site 0 %" PRId64 ", site 1 %" PRId64 " entries",
                jint (s0, "backlog_entries"), jint (s1, "backlog_entries"));
      ok = false;
    }
    for (i = 0; ok && i < json_object_array_length (ds); i++) {
      json_object *d = json_object_array_get_idx (ds, i), *legs = jget (d, "legs");
      for (j = 0; ok && legs && j < json_object_array_length (legs); j++) {
        json_object *l = json_object_array_get_idx (legs, j);
        if (strcmp (jstr (l, "state"), "replicating") || !jbool (l, "consistent") ||
            jint (l, "dirty_regions") > 0 || jint (l, "in_doubt_regions") > 0) {
          snprintf (why, sizeof why, "device %s leg at site %" PRId64 ": %s, consistent %d, "
                    "%" PRId64 " dirty, %" PRId64 " in doubt", jstr (d, "name"), jint (l, "site"),
                    jstr (l, "state"), jbool (l, "consistent"), jint (l, "dirty_regions"),
                    jint (l, "in_doubt_regions"));
          ok = false;
        }
      }
    }
    if (ok)
      return st;
    json_object_put (st);
    sleep_s (0.1);
  }
  fail ("site 1 did not converge within %.0f s: %s", secs, why);
  return NULL;
}

/* Verify device name at site 1 through the control socket: no region may
 * differ.  First wait for a verify still running (the one the control
 * client started while clients wrote): it must have found no difference
 * either (regions written while it read them are checked again, verify.c). */
static void
verify_site1 (const char *name)
{
  char cmd[128];
  double deadline = now_s () + 60;
  int64_t before = -1;
  json_object *st = NULL, *v = NULL;

  while (now_s () < deadline) {
    if ((st = ctl_json ("status")) && (v = jget (site_of (st, 1), "verify")) &&
        !jbool (v, "active"))
      break;
    if (st)
      json_object_put (st);
    st = v = NULL;
    sleep_s (0.05);
  }
  if (!v) {
    fail ("a verify of site 1 was still running after 60 s");
    return;
  }
  before = jint (v, "finished");
  /* One that ran to its end reports only regions that really differ, and
   * a site in log mode has none.  (One stopped with an error, e.g. because
   * the site was resyncing, says nothing.) */
  if (before > 0 && !jstr (v, "error")[0] && jint (v, "regions_differing") != 0)
    fail ("verify of %s at site 1 while clients wrote: %" PRId64 " regions differ",
          jstr (v, "device"), jint (v, "regions_differing"));
  json_object_put (st);
  snprintf (cmd, sizeof cmd, "{\"cmd\": \"verify\", \"device\": \"%s\", \"site\": 1}", name);
  if (!ctl_ok (cmd))
    return;
  deadline = now_s () + 60;
  while (now_s () < deadline) {
    st = ctl_json ("status");
    v = jget (site_of (st, 1), "verify");
    if (v && !jbool (v, "active") && jint (v, "finished") > before) {
      if (jint (v, "regions_differing") != 0 || jstr (v, "error")[0] ||
          jint (v, "regions_checked") != jint (v, "regions_total"))
        fail ("verify of %s at site 1: %" PRId64 " of %" PRId64 " regions checked, %" PRId64
              " differ, error '%s'", name, jint (v, "regions_checked"), jint (v, "regions_total"),
              jint (v, "regions_differing"), jstr (v, "error"));
      else
        note ("verify of %s at site 1: %" PRId64 " regions checked, none differs", name,
              jint (v, "regions_checked"));
      json_object_put (st);
      return;
    }
    if (st)
      json_object_put (st);
    sleep_s (0.05);
  }
  fail ("verify of %s at site 1 did not finish", name);
}

/* A leg file must hold exactly the model of device dev in its first DEV_SIZE
 * bytes (its label area follows). */
static void
compare_file (const char *what, const char *path, unsigned dev)
{
  uint8_t *buf = malloc (DEV_SIZE);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  size_t got = 0;

  if (!buf || fd == -1) {
    fail ("%s: cannot read %s: %s", what, path, strerror (errno));
    goto out;
  }
  while (got < DEV_SIZE) {
    ssize_t r = pread (fd, buf + got, DEV_SIZE - got, (off_t) got);
    if (r <= 0)
      break;
    got += (size_t) r;
  }
  if (got != DEV_SIZE)
    fail ("%s: %s is short (%zu bytes)", what, path, got);
  else if (memcmp (buf, model[dev], DEV_SIZE) != 0)
    report_diff (what, dev, 0, buf, model[dev], DEV_SIZE);
  else
    note ("%s (%s) equals the model of d%u", what, path, dev);
 out:
  if (fd != -1)
    close (fd);
  free (buf);
}

static int
run_pass (int pass, bool threads_engine, bool late_remote, bool kill_remote, double io_secs)
{
  struct ctl_args ca = { .io_secs = io_secs };
  pthread_t ctl_thread;
  struct control *ctl = NULL;
  struct cfg *cfg;
  json_object *st;
  double t0 = now_s (), t_io;
  uint64_t ops = 0, bytes = 0;
  unsigned i;
  int before = __atomic_load_n (&failures, __ATOMIC_SEQ_CST);
  char path[192];

  note ("== pass %d: %s engine, remote %s%s", pass, threads_engine ? "thread-pool" : "io_uring",
        late_remote ? "started after the engine (connector brings it in)" : "up from the start",
        kill_remote ? ", killed and restarted while site 1 is sync" : "");
  if (threads_engine)
    setenv ("NBD_REPLICATOR_NO_URING", "1", 1);
  else
    unsetenv ("NBD_REPLICATOR_NO_URING");
  if (!late_remote && nbdkit_start () == -1) {
    fail ("pass %d: nbdkit does not start", pass);
    return -1;
  }
  if (!(cfg = make_cfg ()) || !(rep = replicator_new (cfg))) {
    fail ("pass %d: the engine does not open", pass);
    nbdkit_stop ();
    return -1;
  }
  for (i = 0; i < NDEV; i++) {
    char name[8];
    snprintf (name, sizeof name, "d%u", i);
    if (!(devs[i] = replicator_find (rep, name)) || devs[i]->size != DEV_SIZE) {
      fail ("pass %d: no device %s of %u bytes", pass, name, DEV_SIZE);
      replicator_free (rep);
      nbdkit_stop ();
      return -1;
    }
  }
  max_write = devs[0]->max_request;
  if (max_write > 65536)
    max_write = 65536;
  note ("devices: block size %u, largest request %u; writes up to %u bytes (some %u, split)",
        devs[0]->block_size, devs[0]->max_request, max_write, 2 * max_write);
  if (!(ctl = control_open (rep, ctl_path, NULL))) {
    fail ("pass %d: the control socket does not open", pass);
    replicator_free (rep);
    nbdkit_stop ();
    return -1;
  }
  if (replicator_start (rep) == -1 || control_run (ctl) == -1) {
    fail ("pass %d: the engine does not start", pass);
    control_stop (ctl);
    replicator_stop (rep);
    replicator_free (rep);
    nbdkit_stop ();
    return -1;
  }

  /* I/O phase */
  __atomic_store_n (&io_stop, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n (&ctl_stop, 0, __ATOMIC_SEQ_CST);
  t_io = now_s ();
  for (i = 0; i < NCLIENTS; i++) {
    struct client *c = &clients[i];
    c->id = i;
    c->rng = mix (seed + (uint64_t) pass * 1000 + i) | 1;
    c->writes = c->reads = c->xreads = c->xsectors = c->zeroes = c->trims = c->flushes = c->bytes = 0;
    if (pthread_create (&c->thread, NULL, client_thread, c) != 0) {
      fail ("pthread_create");
      abort ();
    }
  }
  if (pthread_create (&ctl_thread, NULL, control_client_thread, &ca) != 0) {
    fail ("pthread_create");
    abort ();
  }
  if (late_remote) {
    sleep_s (t_io + io_secs * 0.12 - now_s ());
    note ("starting nbdkit for site 1 now");
    if (nbdkit_start () == -1)
      fail ("pass %d: nbdkit does not start", pass);
  }
  if (kill_remote) {
    /* while the control client has site 1 at policy sync (0.65..0.78):
     * writes in flight there become in doubt, sync writers wait at most
     * disconnect_timeout, the connector reconnects */
    sleep_s (t_io + io_secs * 0.68 - now_s ());
    note ("killing nbdkit (site 1) with kill -9");
    if (nbd_pid > 0) {               /* never kill (-1, ...) */
      kill (nbd_pid, SIGKILL);
      waitpid (nbd_pid, NULL, 0);
      nbd_pid = -1;
    }
    sleep_s (t_io + io_secs * 0.74 - now_s ());
    note ("starting nbdkit for site 1 again");
    if (nbdkit_start () == -1)
      fail ("pass %d: nbdkit does not start again", pass);
  }
  sleep_s (t_io + io_secs - now_s ());
  __atomic_store_n (&io_stop, 1, __ATOMIC_SEQ_CST);
  for (i = 0; i < NCLIENTS; i++)
    pthread_join (clients[i].thread, NULL);
  __atomic_store_n (&ctl_stop, 1, __ATOMIC_SEQ_CST);
  pthread_join (ctl_thread, NULL);
  for (i = 0; i < NCLIENTS; i++) {
    struct client *c = &clients[i];
    note ("client %u: %" PRIu64 " writes (%" PRIu64 " KiB), %" PRIu64 " own reads, %" PRIu64
          " other reads (%" PRIu64 " sectors checked), %" PRIu64 " zeroes, %" PRIu64 " trims, %"
          PRIu64 " flushes", i, c->writes, c->bytes >> 10, c->reads, c->xreads, c->xsectors,
          c->zeroes, c->trims, c->flushes);
    ops += c->writes + c->reads + c->xreads + c->zeroes + c->trims + c->flushes;
    bytes += c->bytes;
  }
  note ("I/O phase: %.1f s, %" PRIu64 " operations, %" PRIu64 " KiB written; control: %u status, "
        "%u pause, %u resume, %u policy, %u verify (%u refused), paused seen %u times",
        now_s () - t_io, ops, bytes >> 10, ca.st.status, ca.st.pauses, ca.st.resumes,
        ca.st.policies, ca.st.verifies, ca.st.verify_refused, ca.st.paused_seen);
  if (ca.st.status < 10 || ca.st.pauses != 1 || ca.st.resumes != 1 || ca.st.policies != 2 ||
      ca.st.errors_ok != 1)
    fail ("pass %d: the control client did not run its script (%u status)", pass, ca.st.status);
  if (ca.st.pauses && !ca.st.paused_seen)
    fail ("pass %d: status never showed site 1 paused", pass);

  /* Everything out, then site 1 must catch up completely. */
  if (rdev_flush (rep) != 0)
    fail ("pass %d: final flush failed", pass);
  if ((st = wait_converged (120))) {
    json_object *log = jget (st, "log");
    const char *engine = jstr (st, "engine");
    int64_t next = jint (log, "next_seq"), slots = jint (log, "slots");
    int64_t data = jint (log, "data_blocks") * 4096;
    note ("site 1 caught up %.1f s after the I/O phase; engine %s; log: next_seq %" PRId64
          ", %" PRId64 " slots, %" PRId64 " full waits; %" PRIu64 " KiB written through a %"
          PRId64 " KiB data ring", now_s () - t_io - io_secs, engine, next, slots,
          jint (log, "full_waits"), bytes >> 10, data >> 10);
    if (threads_engine && strcmp (engine, "threads"))
      fail ("pass %d: engine is '%s', want 'threads'", pass, engine);
    if (!threads_engine && strcmp (engine, "io_uring"))
      note ("(io_uring is not available here: engine %s)", engine);
    if (data <= 0 || bytes < 4 * (uint64_t) data)
      fail ("pass %d: the data ring did not wrap at least 4 times (%" PRIu64 " bytes written, "
            "ring %" PRId64 ")", pass, bytes, data);
    if (kill_remote) {
      json_object *ds = jget (st, "devices");
      int64_t drops = 0;
      size_t k, j;
      for (k = 0; ds && k < json_object_array_length (ds); k++) {
        json_object *legs = jget (json_object_array_get_idx (ds, k), "legs");
        for (j = 0; legs && j < json_object_array_length (legs); j++)
          if (jint (json_object_array_get_idx (legs, j), "site") == 1)
            drops += jint (json_object_array_get_idx (legs, j), "drops");
      }
      note ("site 1 connections dropped (kill -9 of nbdkit): %" PRId64, drops);
      if (drops < 1)
        fail ("pass %d: no site 1 connection was seen dropping after kill -9 of nbdkit", pass);
    }
    json_object_put (st);
    for (i = 0; i < NDEV; i++) {
      char name[8];
      snprintf (name, sizeof name, "d%u", i);
      verify_site1 (name);
    }
  }

  /* Read back both devices whole while the engine runs. */
  {
    uint8_t *buf = malloc (max_write);
    for (i = 0; buf && i < NDEV; i++) {
      uint64_t off;
      for (off = 0; off < DEV_SIZE; off += max_write) {
        if (rdev_pread (devs[i], buf, max_write, off) != 0) {
          fail ("final read of d%u at %" PRIu64 ": %s", i, off, strerror (errno));
          break;
        }
        if (memcmp (buf, model[i] + off, max_write) != 0) {
          report_diff ("final read", i, off, buf, model[i] + off, max_write);
          break;
        }
      }
    }
    free (buf);
  }

  control_stop (ctl);
  replicator_stop (rep);
  replicator_free (rep);
  rep = NULL;
  nbdkit_stop ();
  for (i = 0; i < NDEV; i++) {
    char what[64];
    snprintf (path, sizeof path, "%s/d%u.img", dir, i);
    snprintf (what, sizeof what, "pass %d: local leg of d%u", pass, i);
    compare_file (what, path, i);
    snprintf (path, sizeof path, "%s/r/r%u.img", dir, i);
    snprintf (what, sizeof what, "pass %d: site 1 leg of d%u", pass, i);
    compare_file (what, path, i);
  }
  note ("pass %d: %s in %.1f s", pass,
        __atomic_load_n (&failures, __ATOMIC_SEQ_CST) == before ? "ok" : "FAILED", now_s () - t0);
  return __atomic_load_n (&failures, __ATOMIC_SEQ_CST) == before ? 0 : -1;
}

/* Remove the temporary directory (also when a sanitizer ends the run:
 * the report is what matters then; nbdkit dies with us). */
static void
remove_dir (void)
{
  static const char *const names[] = { "log", "d0.img", "d1.img", "r/r0.img", "r/r1.img",
                                       "nbdkit.log", "nbd.sock", "nbd.pid", "ctl.sock" };
  char path[192];
  size_t i;

  for (i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf (path, sizeof path, "%s/%s", dir, names[i]);
    unlink (path);
  }
  snprintf (path, sizeof path, "%s/r", dir);
  rmdir (path);
  rmdir (dir);
}

static int
make_file (const char *path)
{
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1 || ftruncate (fd, LEG_SIZE) == -1) {
    perror (path);
    if (fd != -1)
      close (fd);
    return -1;
  }
  close (fd);
  return 0;
}

int
main (void)
{
  struct report_sink rs = { .error = sink_error, .debug = sink_debug, .info = sink_info };
  const char *e;
  double io_secs = 4;
  char path[192];
  unsigned i;

  t_start = now_s ();
  setvbuf (stdout, NULL, _IOLBF, 0);
#ifndef HAVE_LIBNBD
  printf ("SKIP: built without libnbd (the remote leg needs it)\n");
  return 77;
#endif
  if (!have_nbdkit ()) {
    printf ("SKIP: nbdkit is not installed (the remote leg needs it)\n");
    return 77;
  }
  if ((e = getenv ("TEST_ENGINE_MT_SECONDS")) && atof (e) > 0)
    io_secs = atof (e);
  seed = (e = getenv ("TEST_SEED")) ? strtoull (e, NULL, 0) : (uint64_t) time (NULL) ^ (uint64_t) getpid ();
  printf ("seed %" PRIu64 " (TEST_SEED=%" PRIu64 " repeats this run), I/O phase %.1f s per pass\n",
          seed, seed, io_secs);
  report_set_sink (&rs);

  if (!mkdtemp (dir)) {
    perror ("mkdtemp");
    return 1;
  }
#ifdef __SANITIZE_THREAD__
  if (!getenv ("TEST_ENGINE_MT_KEEP"))
    __sanitizer_set_death_callback (remove_dir);
#endif
  snprintf (ctl_path, sizeof ctl_path, "%s/ctl.sock", dir);
  snprintf (nbd_sock, sizeof nbd_sock, "%s/nbd.sock", dir);
  snprintf (nbd_pidf, sizeof nbd_pidf, "%s/nbd.pid", dir);
  snprintf (nbd_log, sizeof nbd_log, "%s/nbdkit.log", dir);
  snprintf (path, sizeof path, "%s/r", dir);
  if (mkdir (path, 0755) == -1) {
    perror (path);
    return 1;
  }
  for (i = 0; i < NDEV; i++) {
    if (!(model[i] = calloc (1, DEV_SIZE)))
      return 1;
    snprintf (path, sizeof path, "%s/d%u.img", dir, i);
    if (make_file (path) == -1)
      return 1;
    snprintf (path, sizeof path, "%s/r/r%u.img", dir, i);
    if (make_file (path) == -1)
      return 1;
  }

  /* Pass 2 continues from pass 1's data: the model carries over. */
  run_pass (1, false, true, false, io_secs);
  if (!__atomic_load_n (&failures, __ATOMIC_SEQ_CST))
    run_pass (2, true, false, true, io_secs);

  nbdkit_stop ();
  if (__atomic_load_n (&failures, __ATOMIC_SEQ_CST) || getenv ("TEST_ENGINE_MT_KEEP"))
    printf ("kept %s (nbdkit log: %s)\n", dir, nbd_log);
  else
    remove_dir ();
  for (i = 0; i < NDEV; i++)
    free (model[i]);
  printf ("%s: %d failure(s), %.1f s\n", failures ? "FAIL" : "PASS", failures, now_s () - t_start);
  return failures ? 1 : 0;
}
