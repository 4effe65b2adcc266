/* The NBD link against a real nbdkit (memory plugin on a unix socket),
 * driven the way the site worker drives it: events() -> poll -> notify().
 *
 *  1. A read notification when nothing is on the socket (io_uring poll
 *     results can say POLLIN spuriously) must not wedge the connection:
 *     requests queued after it still go out and complete.  Before the fix
 *     libnbd sat in REPLY.START waiting for a reply that never came.
 *  2. 256 pipelined writes with spurious POLLIN|POLLOUT notifications
 *     mixed in all complete, then a flush.
 *  3. pwrite_durable: a FUA write on a server with FUA, a write then a
 *     flush on one without (nbdkit's fua filter; the log filter shows what
 *     was sent), reads back; a write slower than the deadline (delay
 *     filter) returns -ETIMEDOUT in time and leaves the connection dead.
 *  4. rlink's check hook: a refusal makes rlink_connect_once return NULL,
 *     unsuitable, with the hook's message; a hook that reads through the
 *     connection sees the data; a reader (struct rreader) is not checked
 *     (it uses what the worker's connection was checked to be) and writes
 *     durably; the connector thread retries a refused remote and takes it
 *     once the hook accepts.
 *
 * Exit 77 (skip) when nbdkit is not installed or this build has no libnbd.
 */
#include <config.h>
#undef NDEBUG
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "link.h"
#include "rlink.h"
#include "units.h"

#define NWRITES 256
#define WSIZE   4096

static int done_count, err_count;

static void
on_done (void *opaque, int res)
{
  int want = *(int *) opaque;
  if (res != want) {
    fprintf (stderr, "request completed with %d, want %d\n", res, want);
    err_count++;
  }
  done_count++;
}

/* Drive the connection until `target` completions or timeout_ms. */
static int
drive (const struct link_ops *ops, void *conn, int target, int timeout_ms)
{
  uint64_t end = mono_ns () + (uint64_t) timeout_ms * 1000000u;
  while (done_count < target) {
    struct pollfd p;
    int fd = -1, ev = ops->events (conn, &fd);
    if (mono_ns () > end)
      return -1;
    if (!ev) {
      fprintf (stderr, "connection gone\n");
      return -1;
    }
    p.fd = fd;
    p.events = (short) ev;
    p.revents = 0;
    if (poll (&p, 1, 50) > 0 && ops->notify (conn, p.revents) == -1) {
      fprintf (stderr, "notify: connection died\n");
      return -1;
    }
  }
  return 0;
}

#ifdef HAVE_LIBNBD
/* Start nbdkit -f -U DIR/NAME.sock -P DIR/NAME.pid ARGS... (NULL-ended):
 * its pid, its URI in uri; waits for the pid file. */
static pid_t
start_server (const char *dir, const char *name, char *uri, size_t urilen, ...)
{
  char sock[128], pidf[128];
  const char *argv[24];
  int n = 0, i;
  va_list ap;
  pid_t pid;

  snprintf (sock, sizeof sock, "%s/%s.sock", dir, name);
  snprintf (pidf, sizeof pidf, "%s/%s.pid", dir, name);
  snprintf (uri, urilen, "nbd+unix:///?socket=%s", sock);
  argv[n++] = "nbdkit";
  argv[n++] = "-f";
  argv[n++] = "-U";
  argv[n++] = sock;
  argv[n++] = "-P";
  argv[n++] = pidf;
  va_start (ap, urilen);
  while (n < 23 && (argv[n] = va_arg (ap, const char *)))
    n++;
  va_end (ap);
  argv[n] = NULL;
  if ((pid = fork ()) == 0) {
    execvp ("nbdkit", (char **) argv);
    _exit (127);
  }
  for (i = 0; i < 500; i++) {
    struct stat st;
    if (stat (pidf, &st) == 0 && st.st_size > 0)
      break;
    usleep (20000);
  }
  return pid;
}

static void
stop_server (const char *dir, const char *name, pid_t pid)
{
  char f[128];
  kill (pid, SIGTERM);
  waitpid (pid, NULL, 0);
  snprintf (f, sizeof f, "%s/%s.sock", dir, name);
  unlink (f);
  snprintf (f, sizeof f, "%s/%s.pid", dir, name);
  unlink (f);
}

/* The file holds a line with every one of the strings (NULL-ended). */
static bool
log_has (const char *file, ...)
{
  char line[1024];
  bool found = false;
  FILE *f = fopen (file, "r");
  if (!f)
    return false;
  while (!found && fgets (line, sizeof line, f)) {
    const char *w;
    va_list ap;
    found = true;
    va_start (ap, file);
    while ((w = va_arg (ap, const char *)))
      if (!strstr (line, w))
        found = false;
    va_end (ap);
  }
  fclose (f);
  return found;
}

static void *
connect_to (const char *uri, struct link_info *info)
{
  struct link_params lp = { 0 };
  char err[256];
  void *c;
  lp.deadline_ns = mono_ns () + 10000000000u;
  if (!(c = link_nbd_ops.connect (uri, &lp, info, err, sizeof err)))
    fprintf (stderr, "connect %s: %s\n", uri, err);
  return c;
}

/* 3a. A durable write, read back, on a server with FUA (want_fua) or
 * without; the server's log shows a FUA write, or a plain write and a
 * flush.  Failures. */
static int
durable_round_trip (const char *dir, const char *name, bool want_fua)
{
  const struct link_ops *ops = &link_nbd_ops;
  char uri[192], logf[160], logarg[180];
  struct link_info info;
  unsigned char *w = NULL, *r = NULL;
  int failures = 0, res;
  void *c;
  pid_t pid;

  snprintf (logf, sizeof logf, "%s/%s.log", dir, name);
  snprintf (logarg, sizeof logarg, "logfile=%s", logf);
  if (want_fua)
    pid = start_server (dir, name, uri, sizeof uri, "--filter=log", "memory", "size=16M",
                        logarg, (char *) NULL);
  else                                   /* the fua filter's default: no FUA */
    pid = start_server (dir, name, uri, sizeof uri, "--filter=log", "--filter=fua", "memory",
                        "size=16M", logarg, (char *) NULL);
  if (!(c = connect_to (uri, &info))) {
    stop_server (dir, name, pid);
    return 1;
  }
  if (info.can_fua != want_fua || !info.can_flush) {
    fprintf (stderr, "%s: can_fua %d can_flush %d\n", name, info.can_fua, info.can_flush);
    failures++;
  }
  if (posix_memalign ((void **) &w, 4096, 4096) || posix_memalign ((void **) &r, 4096, 4096))
    abort ();
  memset (w, want_fua ? 0x5a : 0xc3, 4096);
  memset (r, 0, 4096);
  res = ops->pwrite_durable (c, w, 4096, 8u << 20, mono_ns () + 5000000000u);
  if (res != 0) {
    fprintf (stderr, "%s: pwrite_durable: %s\n", name, strerror (-res));
    failures++;
  }
  else if ((res = ops->pread (c, r, 4096, 8u << 20, mono_ns () + 5000000000u)) != 0 ||
           memcmp (w, r, 4096) != 0) {
    fprintf (stderr, "%s: read back: %s\n", name, res ? strerror (-res) : "different data");
    failures++;
  }
  ops->close (c);
  stop_server (dir, name, pid);
  if (want_fua && !log_has (logf, "Write", "offset=0x800000", "fua=1", (char *) NULL)) {
    fprintf (stderr, "%s: no FUA write in %s\n", name, logf);
    failures++;
  }
  if (!want_fua && (!log_has (logf, "Write", "offset=0x800000", "fua=0", (char *) NULL) ||
                    !log_has (logf, "Flush id=", (char *) NULL))) {
    fprintf (stderr, "%s: no plain write and flush in %s\n", name, logf);
    failures++;
  }
  if (!failures)
    printf ("ok: pwrite_durable %s\n", want_fua ? "with FUA" : "as a write then a flush");
  unlink (logf);
  free (w);
  free (r);
  return failures;
}

/* 3b. A write slower than the deadline: -ETIMEDOUT about at the deadline,
 * and the connection is dead after it. */
static int
durable_deadline (const char *dir)
{
  const struct link_ops *ops = &link_nbd_ops;
  char uri[192];
  struct link_info info;
  static char b[4096];
  int failures = 0, res;
  uint64_t t0, ms;
  void *c;
  pid_t pid = start_server (dir, "slow", uri, sizeof uri, "--filter=delay", "memory", "size=16M",
                            "wdelay=5", (char *) NULL);

  if (!(c = connect_to (uri, &info))) {
    stop_server (dir, "slow", pid);
    return 1;
  }
  t0 = mono_ns ();
  res = ops->pwrite_durable (c, b, sizeof b, 0, t0 + 1000000000u);
  ms = (mono_ns () - t0) / 1000000u;
  if (res != -ETIMEDOUT || ms < 900 || ms > 3000) {
    fprintf (stderr, "slow write: %d (%s) after %" PRIu64 " ms, want -ETIMEDOUT after ~1 s\n",
             res, strerror (-res), ms);
    failures++;
  }
  if ((res = ops->pread (c, b, sizeof b, 0, mono_ns () + 1000000000u)) != -ENOTCONN) {
    fprintf (stderr, "read after a timeout: %d, want -ENOTCONN (connection aborted)\n", res);
    failures++;
  }
  ops->close (c);
  stop_server (dir, "slow", pid);
  if (!failures)
    printf ("ok: pwrite_durable past its deadline: -ETIMEDOUT after %" PRIu64 " ms\n", ms);
  return failures;
}

/* 4. The check hook.  opaque: struct hook_state. */
struct hook_state {
  pthread_mutex_t lock;          /* guards refuse, calls, saw */
  bool refuse;
  int calls;
  unsigned char saw;             /* first byte at 1 MiB, read by the hook */
};

static int
check_hook (void *opaque, void *conn, const struct link_ops *ops, struct link_info *info,
            char *err, size_t errlen)
{
  struct hook_state *hs = opaque;
  unsigned char *b = NULL;
  bool refuse;
  int r;

  if (info->size != 16u << 20 || posix_memalign ((void **) &b, 4096, 4096))
    abort ();
  r = ops->pread (conn, b, 4096, 1u << 20, mono_ns () + 5000000000u);
  pthread_mutex_lock (&hs->lock);
  hs->calls++;
  hs->saw = b[0];
  refuse = hs->refuse;
  pthread_mutex_unlock (&hs->lock);
  free (b);
  if (r != 0) {
    snprintf (err, errlen, "label read: %s", strerror (-r));
    return -1;
  }
  if (refuse) {
    snprintf (err, errlen, "the remote carries another group's label");
    return -1;
  }
  return 0;
}

static int
hook_tests (const char *dir)
{
  const struct link_ops *ops = &link_nbd_ops;
  struct hook_state hs = { .lock = PTHREAD_MUTEX_INITIALIZER };
  char uri[192], err[256];
  struct link_info info;
  struct rlink k;
  struct rreader rr;
  unsigned char *b = NULL;
  int failures = 0, i;
  bool unsuitable;
  void *c;
  pid_t pid = start_server (dir, "hook", uri, sizeof uri, "memory", "size=16M", (char *) NULL);

  if (posix_memalign ((void **) &b, 4096, 4096))
    abort ();
  rlink_init (&k, ops, uri, "test leg");
  k.min_size = 16u << 20;
  k.max_block = 4096;
  k.connect_timeout_ms = 5000;
  k.backoff_max_ms = 200;
  k.check = check_hook;
  k.check_opaque = &hs;

  /* A reader writes durably through its own connection (not checked: it
   * uses the leg the worker's connection was checked to be). */
  rreader_init (&rr, &k);
  memset (b, 0x77, 4096);
  err[0] = 0;
  if (rreader_pwrite_durable (&rr, b, 4096, 1u << 20, err, sizeof err) != 0) {
    fprintf (stderr, "rreader_pwrite_durable: %s\n", err);
    failures++;
  }
  memset (b, 0, 4096);
  err[0] = 0;
  if (rreader_pread (&rr, b, 4096, 1u << 20, err, sizeof err) != 0 || b[0] != 0x77) {
    fprintf (stderr, "rreader_pread after the durable write: %s (byte %#x)\n", err, b[0]);
    failures++;
  }
  if (hs.calls != 0) {
    fprintf (stderr, "the reader's connection was checked %d times, want 0\n", hs.calls);
    failures++;
  }
  rreader_destroy (&rr);

  /* Accepted: the hook read the data through the new connection. */
  err[0] = 0;
  c = rlink_connect_once (&k, 5000, &info, err, sizeof err, &unsuitable);
  if (!c || unsuitable || hs.calls != 1 || hs.saw != 0x77) {
    fprintf (stderr, "accepting hook: conn %p unsuitable %d calls %d saw %#x: %s\n", c,
             unsuitable, hs.calls, hs.saw, err);
    failures++;
  }
  if (c)
    ops->close (c);

  /* Refused: NULL, unsuitable, the hook's message. */
  hs.refuse = true;
  err[0] = 0;
  c = rlink_connect_once (&k, 5000, &info, err, sizeof err, &unsuitable);
  if (c || !unsuitable || strcmp (err, "the remote carries another group's label") != 0) {
    fprintf (stderr, "refusing hook: conn %p unsuitable %d err '%s'\n", c, unsuitable, err);
    failures++;
  }
  if (c)
    ops->close (c);

  /* The connector thread: refused (last_error says why), retried, and
   * taken once the hook accepts. */
  if (rlink_start (&k) != 0)
    abort ();
  rlink_want (&k);
  for (i = 0; i < 250; i++) {
    rlink_get_error (&k, err, sizeof err);
    if (err[0])
      break;
    usleep (20000);
  }
  if (strcmp (err, "the remote carries another group's label") != 0) {
    fprintf (stderr, "connector: last error '%s'\n", err);
    failures++;
  }
  pthread_mutex_lock (&hs.lock);
  hs.refuse = false;
  pthread_mutex_unlock (&hs.lock);
  for (c = NULL, i = 0; i < 250 && !(c = rlink_take (&k, &info)); i++)
    usleep (20000);
  if (!c) {
    fprintf (stderr, "connector: no connection 5 s after the hook accepts\n");
    failures++;
  }
  else
    ops->close (c);
  rlink_destroy (&k);
  stop_server (dir, "hook", pid);
  free (b);
  if (!failures)
    printf ("ok: check hook (refuse, read through the connection, reader, connector retry)\n");
  return failures;
}
#endif /* HAVE_LIBNBD */

static int
have_nbdkit (void)
{
  return system ("nbdkit --version >/dev/null 2>&1") == 0;
}

int
main (void)
{
#ifndef HAVE_LIBNBD
  printf ("SKIP: built without libnbd\n");
  return 77;
#else
  const struct link_ops *ops = &link_nbd_ops;
  char dir[] = "/tmp/tln.XXXXXX", sock[128], pidf[128], uri[192], err[256];
  struct link_params lp = { 0 };
  struct link_info info;
  static char buf[WSIZE];
  int want_w = WSIZE, want_f = 0, i, failures = 0;
  void *conn;
  pid_t pid;

  if (!have_nbdkit ()) {
    printf ("SKIP: nbdkit is not installed\n");
    return 77;
  }
  if (!mkdtemp (dir)) {
    perror ("mkdtemp");
    return 1;
  }
  snprintf (sock, sizeof sock, "%s/s.sock", dir);
  snprintf (pidf, sizeof pidf, "%s/s.pid", dir);
  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", sock);
  if ((pid = fork ()) == 0) {
    execlp ("nbdkit", "nbdkit", "-f", "-U", sock, "-P", pidf, "memory", "size=16M", (char *) NULL);
    _exit (127);
  }
  for (i = 0; i < 500; i++) {
    struct stat st;
    if (stat (pidf, &st) == 0 && st.st_size > 0)
      break;
    usleep (20000);
  }

  lp.deadline_ns = mono_ns () + 10000000000u;
  conn = ops->connect (uri, &lp, &info, err, sizeof err);
  if (!conn) {
    fprintf (stderr, "connect %s: %s\n", uri, err);
    failures++;
    goto out;
  }
  if (info.size != 16u << 20) {
    fprintf (stderr, "size %llu, want 16M\n", (unsigned long long) info.size);
    failures++;
  }

  /* 1. Spurious read notification on an idle connection, then a write. */
  if (ops->notify (conn, POLLIN) == -1) {
    fprintf (stderr, "spurious POLLIN killed the connection\n");
    failures++;
    goto close;
  }
  memset (buf, 0xa5, sizeof buf);
  if (ops->submit (conn, LREQ_WRITE, buf, 0, WSIZE, 0, on_done, &want_w) != 0 ||
      drive (ops, conn, 1, 5000) != 0) {
    fprintf (stderr, "a write queued after a spurious POLLIN did not complete within 5 s\n");
    failures++;
    goto close;
  }
  printf ("ok: write after a spurious read notification\n");

  /* 2. Pipelined writes with spurious notifications mixed in. */
  done_count = 0;
  for (i = 0; i < NWRITES; i++) {
    if (ops->submit (conn, LREQ_WRITE, buf, (uint64_t) i * WSIZE, WSIZE, 0, on_done, &want_w) != 0) {
      fprintf (stderr, "submit %d failed\n", i);
      failures++;
      goto close;
    }
    if (i % 16 == 0 && ops->notify (conn, POLLIN | POLLOUT) == -1) {
      fprintf (stderr, "spurious POLLIN|POLLOUT killed the connection\n");
      failures++;
      goto close;
    }
  }
  if (drive (ops, conn, NWRITES, 10000) != 0) {
    fprintf (stderr, "%d of %d pipelined writes completed within 10 s\n", done_count, NWRITES);
    failures++;
    goto close;
  }
  done_count = 0;
  if (ops->submit (conn, LREQ_FLUSH, NULL, 0, 0, 0, on_done, &want_f) != 0 ||
      drive (ops, conn, 1, 5000) != 0) {
    fprintf (stderr, "flush did not complete\n");
    failures++;
  }
  else
    printf ("ok: %d pipelined writes and a flush\n", NWRITES);
  if (err_count) {
    fprintf (stderr, "%d requests failed\n", err_count);
    failures++;
  }
 close:
  ops->close (conn);
 out:
  kill (pid, SIGTERM);
  waitpid (pid, NULL, 0);
  unlink (sock);
  unlink (pidf);

  failures += durable_round_trip (dir, "fua", true);
  failures += durable_round_trip (dir, "nofua", false);
  failures += durable_deadline (dir);
  failures += hook_tests (dir);
  rmdir (dir);
  return failures ? 1 : 0;
#endif
}
