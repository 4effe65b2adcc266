/* Unit test: the replication log format and recovery.
 *   - entries written by a process that then dies (_exit, like kill -9)
 *     are recovered with their payloads;
 *   - every single-byte flip of the newest header copy is detected and
 *     open falls back to the other copy; both copies bad = clear error,
 *     never a new log (mode auto);
 *   - a torn payload or descriptor ends the scan there;
 *   - the ring wraps many times with variable-size entries;
 *   - entries left behind a torn one by a crashed run never validate
 *     after a restart wrote new entries over the same sequence numbers;
 *   - a full log makes writers wait until space is released;
 *   - identity: a changed device with entries in the log is refused;
 *   - a log with a hole is refused.
 */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "cfg.h"
#include "replog.h"
#include "report.h"

static char dir[] = "/tmp/test-replog.XXXXXX";
static char logpath[256];
static char lasterr[2048];
static const char *devname = "d0";
static uint64_t devsize = 64u << 20;

static void
capture (const char *fmt, va_list ap)
{
  vsnprintf (lasterr, sizeof lasterr, fmt, ap);
}

static void
quiet (const char *fmt, va_list ap)
{
  (void) fmt;
  (void) ap;
}

static int
open_log (int mode, uint64_t size, struct replog **rl, struct replog_recovery *rec)
{
  struct replog_dev_id id = { devname, devsize, 512 };
  struct replog_open_args a = {
    .path = logpath, .offset = 0, .size = size, .mode = mode, .commit_interval_ms = 1,
    .ndevices = 1, .devices = &id, .sites = 1, .log_sites = 1,
  };
  lasterr[0] = 0;
  return replog_open (&a, rl, rec);
}

/* Payload byte i of entry seq. */
static uint8_t
pat (uint64_t seq, uint32_t i)
{
  return (uint8_t) (seq * 131 + i * 7 + (i >> 9));
}

static uint64_t
put (struct replog *rl, uint64_t off, uint32_t len)
{
  static uint8_t buf[1 << 20];
  uint64_t seq;
  uint8_t *p;
  uint32_t i;
  assert (replog_reserve (rl, 0, RL_OP_WRITE, 0, off, len, &seq, (void **) &p) == 0);
  for (i = 0; i < len; i++)
    buf[i] = pat (seq, i);
  assert (replog_fill (rl, seq, buf) == 0);
  replog_commit (rl, seq);
  for (i = 0; i < len; i++)            /* the mapping shows what was written */
    assert (p[i] == buf[i]);
  return seq;
}

static void
check_payloads (struct replog *rl, uint64_t from, uint64_t to)
{
  uint64_t seq;
  for (seq = from; seq <= to; seq++) {
    const struct rl_desc *d = replog_desc (rl, seq);
    const uint8_t *p = replog_payload (rl, d);
    uint32_t i;
    assert (d->seq == seq);
    if (d->op != RL_OP_WRITE)
      continue;
    for (i = 0; i < d->length; i++)
      if (p[i] != pat (seq, i)) {
        fprintf (stderr, "entry %" PRIu64 " byte %u differs\n", seq, i);
        exit (1);
      }
  }
}

/* Run fn in a child that dies without any cleanup, like kill -9. */
static void
crash_child (void (*fn) (void *), void *arg)
{
  pid_t p = fork ();
  int st;
  assert (p >= 0);
  if (p == 0) {
    fn (arg);
    _exit (0);
  }
  assert (waitpid (p, &st, 0) == p && WIFEXITED (st) && WEXITSTATUS (st) == 0);
}

static void
write_ten (void *arg)
{
  struct replog *rl;
  struct replog_recovery rec;
  uint64_t s, i;
  (void) arg;
  assert (open_log (LOG_MODE_AUTO, 1u << 20, &rl, &rec) == 0);
  assert (replog_start (rl) == 0);
  for (i = 0; i < 10; i++)
    put (rl, i * 4096, 4096 + (uint32_t) i * 512);
  assert (replog_barrier (rl, 0, &s) == 0 && s == 11);
  assert (replog_wait_durable (rl, s) == 0);
}

static void
copy_file (const char *from, const char *to)
{
  char cmd[1024];
  snprintf (cmd, sizeof cmd, "cp --sparse=never '%s' '%s'", from, to);
  assert (system (cmd) == 0);
}

static void
flip (uint64_t off)
{
  int fd = open (logpath, O_RDWR);
  uint8_t b;
  assert (fd >= 0 && pread (fd, &b, 1, (off_t) off) == 1);
  b ^= 0x5a;
  assert (pwrite (fd, &b, 1, (off_t) off) == 1);
  close (fd);
}

static void
restore_headers (const uint8_t *saved)
{
  int fd = open (logpath, O_RDWR);
  assert (fd >= 0 && pwrite (fd, saved, 8192, 0) == 8192);
  close (fd);
}

static void
test_recover_and_flips (void)
{
  struct replog *rl;
  struct replog_recovery rec;
  struct rl_header h[2];
  uint8_t saved[8192];
  int fd, newest, i, fell_back = 0;

  unlink (logpath);
  crash_child (write_ten, NULL);
  assert (open_log (LOG_MODE_AUTO, 1u << 20, &rl, &rec) == 0);
  assert (!rec.created && rec.entries == 11 && rec.first_seq == 1 && rec.last_seq == 11);
  assert (rec.bytes == 10 * 4096 + 512 * 45);
  check_payloads (rl, 1, 11);
  assert (replog_desc (rl, 11)->op == RL_OP_BARRIER);
  replog_close (rl);
  printf ("recovered 11 entries after a crash, payloads intact\n");

  fd = open (logpath, O_RDONLY);
  assert (fd >= 0 && pread (fd, saved, 8192, 0) == 8192);
  close (fd);
  memcpy (h, saved, sizeof h);
  newest = h[1].generation > h[0].generation;
  for (i = 0; i < RL_HEADER_SIZE; i++) {
    restore_headers (saved);
    flip ((uint64_t) newest * RL_HEADER_SIZE + (uint64_t) i);
    if (open_log (LOG_MODE_AUTO, 1u << 20, &rl, &rec) != 0) {
      fprintf (stderr, "flip of header byte %d: open failed: %s\n", i, lasterr);
      exit (1);
    }
    if (!rec.other_copy_bad || rec.header_copy == newest || rec.entries != 11) {
      fprintf (stderr, "flip of header byte %d not detected\n", i);
      exit (1);
    }
    fell_back++;
    replog_close (rl);
  }
  printf ("every one of %d header byte flips detected; fell back to the other copy\n", fell_back);

  /* Both copies bad: a clear error, and auto never creates over it. */
  restore_headers (saved);
  flip (100);
  flip (RL_HEADER_SIZE + 100);
  assert (open_log (LOG_MODE_AUTO, 1u << 20, &rl, &rec) == -1);
  assert (strstr (lasterr, "both header copies are invalid"));
  assert (open_log (LOG_MODE_OPEN, 1u << 20, &rl, &rec) == -1);
  restore_headers (saved);
  assert (open_log (LOG_MODE_OPEN, 1u << 20, &rl, &rec) == 0 && rec.entries == 11);
  replog_close (rl);
  printf ("both copies bad: refused, entries kept\n");
}

static uint64_t
data_off (struct replog *rl, uint64_t seq)
{
  struct rl_header h;
  replog_get_header (rl, &h);
  return h.data_offset + (replog_desc (rl, seq)->data_pos % h.data_blocks) * RL_BLOCK;
}

static uint64_t
desc_off (struct replog *rl, uint64_t seq)
{
  struct rl_header h;
  replog_get_header (rl, &h);
  return h.desc_offset + (seq % h.ndesc) * RL_DESC_SIZE;
}

static void
test_torn (void)
{
  struct replog *rl;
  struct replog_recovery rec;
  uint64_t poff, doff, moff;
  char pristine[300];

  unlink (logpath);
  crash_child (write_ten, NULL);
  snprintf (pristine, sizeof pristine, "%s.pristine", logpath);
  copy_file (logpath, pristine);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0 && rec.entries == 11);
  poff = data_off (rl, 6) + 4000;
  doff = desc_off (rl, 3) + 16;                  /* offset field */
  moff = desc_off (rl, 8);                       /* magic */
  replog_close (rl);

  copy_file (pristine, logpath);
  flip (poff);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0);
  assert (rec.entries == 5 && rec.last_seq == 5 && strstr (rec.stop_reason, "checksum"));
  replog_close (rl);
  copy_file (pristine, logpath);
  flip (doff);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0 && rec.entries == 2);
  replog_close (rl);
  copy_file (pristine, logpath);
  flip (moff);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0 && rec.entries == 7);
  replog_close (rl);
  printf ("torn payload, corrupt descriptor, missing entry: scan stops there\n");
  unlink (pristine);
}

/* The crashed run: entries 1..10, entry 5 torn.  Restart recovers 1..4
 * and writes a new entry 5, then crashes.  Old 6..10 must not come back. */
static void
write_new_five (void *arg)
{
  struct replog *rl;
  struct replog_recovery rec;
  uint64_t s;
  (void) arg;
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0 && rec.entries == 4);
  assert (replog_start (rl) == 0);
  s = put (rl, 4096 * 20, 4096 + 4 * 512);       /* same length as the old 5 */
  assert (s == 5);
  assert (replog_wait_durable (rl, s) == 0);
}

static void
test_stale_after_restart (void)
{
  struct replog *rl;
  struct replog_recovery rec;
  uint64_t poff;

  unlink (logpath);
  crash_child (write_ten, NULL);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0);
  poff = data_off (rl, 5) + 100;
  replog_close (rl);
  flip (poff);
  crash_child (write_new_five, NULL);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0);
  if (rec.entries != 5) {
    fprintf (stderr, "stale entries after restart: recovered %" PRIu64 ", want 5\n", rec.entries);
    exit (1);
  }
  assert (replog_desc (rl, 5)->offset == 4096 * 20);
  check_payloads (rl, 1, 5);
  replog_close (rl);
  printf ("entries behind a torn one from a crashed run never validate after restart\n");
}

/* A fake site worker: declares durable entries applied, up to a limit. */
struct applier {
  struct replog *rl;
  uint64_t limit;
  int stop;                      /* atomic */
};

static void *
applier_thread (void *arg)
{
  struct applier *a = arg;
  uint64_t last = 0;
  while (!__atomic_load_n (&a->stop, __ATOMIC_ACQUIRE)) {
    uint64_t d = replog_wait_work (a->rl, last, 20);
    uint64_t limit = __atomic_load_n (&a->limit, __ATOMIC_ACQUIRE);
    if (d > limit)
      d = limit;
    if (d > last) {
      replog_post_applied (a->rl, 0, d);
      last = d;
    }
  }
  return NULL;
}

static uint64_t wrap_last, wrap_applied_max;

static void
wrap_run (void *arg)
{
  struct replog *rl;
  struct replog_recovery rec;
  static struct applier ap;      /* outlives this function: the thread runs until _exit */
  pthread_t t;
  uint64_t i, s = 0;
  (void) arg;
  assert (open_log (LOG_MODE_CREATE, 1u << 20, &rl, &rec) == 0);
  assert (replog_start (rl) == 0);
  ap = (struct applier) { rl, UINT64_MAX, 0 };
  assert (pthread_create (&t, NULL, applier_thread, &ap) == 0);
  srand (3);
  for (i = 0; i < 3000; i++)
    s = put (rl, ((uint64_t) rand () % 1000) * 4096, 512 * (1 + (uint32_t) rand () % 64));
  /* Stop applying: what follows must all come back after the crash. */
  __atomic_store_n (&ap.limit, s, __ATOMIC_RELEASE);
  for (i = 0; i < 40; i++)
    s = put (rl, ((uint64_t) rand () % 1000) * 4096, 512 * (1 + (uint32_t) rand () % 8));
  assert (replog_wait_durable (rl, s) == 0);
  /* Tell the parent through a file what we wrote. */
  {
    FILE *f;
    char p[300];
    snprintf (p, sizeof p, "%s.info", logpath);
    f = fopen (p, "w");
    fprintf (f, "%" PRIu64 "\n", s);
    fclose (f);
  }
}

static void
test_wrap (void)
{
  struct replog *rl;
  struct replog_recovery rec;
  struct replog_stats st;
  uint64_t applied;
  char p[300];
  FILE *f;

  crash_child (wrap_run, NULL);
  snprintf (p, sizeof p, "%s.info", logpath);
  f = fopen (p, "r");
  assert (f && fscanf (f, "%" SCNu64, &wrap_last) == 1);
  fclose (f);
  unlink (p);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0);
  replog_get_stats (rl, &st);
  applied = replog_applied (rl, 0);
  assert (wrap_last > 10 * st.ndesc);                 /* wrapped many times */
  assert (rec.last_seq == wrap_last);
  assert (rec.first_seq == applied + 1);
  assert (rec.entries == wrap_last - applied);
  assert (applied <= wrap_last - 40);                 /* never beyond what was posted */
  check_payloads (rl, rec.first_seq, rec.last_seq);
  wrap_applied_max = applied;
  replog_close (rl);
  printf ("ring wrapped %" PRIu64 " times (%" PRIu64 " slots); recovered %" PRIu64
          " entries after applied %" PRIu64 ", payloads intact\n",
          wrap_last / st.ndesc, st.ndesc, rec.entries, applied);
}

/* A writer blocks on a full log and resumes when space is released. */
struct blocked { struct replog *rl; int done; /* atomic */ };

static void *
blocked_writer (void *arg)
{
  struct blocked *b = arg;
  put (b->rl, 0, 4096);
  __atomic_store_n (&b->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void
test_full_waits (void)
{
  struct replog *rl;
  struct replog_recovery rec;
  struct replog_stats st;
  struct blocked b;
  pthread_t t;
  uint64_t i, s = 0;
  struct timespec ts = { 0, 300 * 1000000 };

  assert (open_log (LOG_MODE_CREATE, 1u << 20, &rl, &rec) == 0);
  assert (replog_start (rl) == 0);
  replog_get_stats (rl, &st);
  for (i = 0; i < st.ndesc; i++)
    s = put (rl, 0, 4096);
  b = (struct blocked) { rl, 0 };
  assert (pthread_create (&t, NULL, blocked_writer, &b) == 0);
  nanosleep (&ts, NULL);
  assert (!__atomic_load_n (&b.done, __ATOMIC_ACQUIRE));   /* full: waiting, no error */
  replog_get_stats (rl, &st);
  assert (st.space_waits >= 1);
  assert (replog_wait_durable (rl, s) == 0);
  replog_post_applied (rl, 0, s);
  assert (pthread_join (t, NULL) == 0 && b.done);
  replog_stop (rl);
  replog_close (rl);
  printf ("a full log makes writers wait until space is released\n");
}

static void
test_identity_and_holes (void)
{
  struct replog *rl;
  struct replog_recovery rec;
  int fd;

  unlink (logpath);
  crash_child (write_ten, NULL);
  devname = "other";
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == -1);
  assert (strstr (lasterr, "still has entries"));
  devname = "d0";
  devsize = 32u << 20;
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == -1);
  assert (strstr (lasterr, "size"));
  devsize = 64u << 20;
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == 0 && rec.entries == 11);
  replog_close (rl);
  printf ("identity: a renamed or resized device with entries in the log is refused\n");

  fd = open (logpath, O_RDWR);
  assert (fd >= 0 && fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 512 * 1024, 65536) == 0);
  close (fd);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == -1 && strstr (lasterr, "hole"));
  printf ("a log with a hole is refused\n");

  /* mode=open on a blank area is an error; create on an existing log resets it. */
  unlink (logpath);
  fd = open (logpath, O_RDWR | O_CREAT, 0600);
  assert (fd >= 0 && ftruncate (fd, 1 << 20) == 0);
  close (fd);
  assert (open_log (LOG_MODE_OPEN, 0, &rl, &rec) == -1 && strstr (lasterr, "blank"));
  crash_child (write_ten, NULL);
  assert (open_log (LOG_MODE_CREATE, 1u << 20, &rl, &rec) == 0 && rec.created && rec.entries == 0);
  replog_close (rl);
  /* Too small. */
  unlink (logpath);
  assert (open_log (LOG_MODE_CREATE, 512 * 1024, &rl, &rec) == -1 && strstr (lasterr, "too small"));
}

int
main (void)
{
  struct report_sink sink = { .error = capture, .debug = quiet };
  uint64_t nd, doff, db;

  report_set_sink (&sink);
  assert (mkdtemp (dir));
  snprintf (logpath, sizeof logpath, "%s/replog", dir);
  assert (replog_geometry (1u << 20, &nd, &doff, &db) == 0);
  assert (nd % 64 == 0 && db >= nd && doff == 8192 + nd * 64 && doff + db * 4096 <= 1u << 20);
  assert (replog_geometry ((1u << 20) - 1, &nd, &doff, &db) == -1);
  assert (replog_geometry (1ull << 30, &nd, &doff, &db) == 0 && (1ull << 30) - doff - db * 4096 < 4096);

  test_recover_and_flips ();
  test_torn ();
  test_stale_after_restart ();
  test_wrap ();
  test_full_waits ();
  test_identity_and_holes ();
  {
    char cmd[300];
    snprintf (cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert (system (cmd) == 0);
  }
  printf ("replog: all format tests passed\n");
  return 0;
}
