/* The NBD link against a real nbdkit (memory plugin on a unix socket),
 * driven the way the site worker drives it: events() -> poll -> notify().
 *
 *  1. A read notification when nothing is on the socket (io_uring poll
 *     results can say POLLIN spuriously) must not wedge the connection:
 *     requests queued after it still go out and complete.  Before the fix
 *     libnbd sat in REPLY.START waiting for a reply that never came.
 *  2. 256 pipelined writes with spurious POLLIN|POLLOUT notifications
 *     mixed in all complete, then a flush.
 *
 * Exit 77 (skip) when nbdkit is not installed or this build has no libnbd.
 */
#include <config.h>
#undef NDEBUG
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "link.h"
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
  rmdir (dir);
  return failures ? 1 : 0;
#endif
}
