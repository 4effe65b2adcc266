/* replctl-journal.c: `replctl journal-replay LEG`: replay the agentless
 * journal of a leg offline (a path, or an NBD URI), for an operator who
 * wants the raw disk.  See replctl(8).
 *
 * Owns: opening a leg with no configuration (a file or block device by
 * path; an NBD export by URI through libnbd directly, so that no worker or
 * link code is involved), its size, and the journal I/O over it.
 * Invariants: nothing is written to the leg unless the journal's
 * superblock is valid and names the leg's label's device, and a batch
 * follows it (jnl_locate writes nothing; jnl_replay writes only then).
 * May call: journal.c, libc, libnbd.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#ifdef HAVE_LIBNBD
#include <libnbd.h>
#endif

#include "journal.h"
#include "replctl-journal.h"

#ifdef HAVE_LIBNBD
/* ---- an NBD export through libnbd ---- */

static int
nbd_rc (int r)
{
  return r == -1 ? -(nbd_get_errno () ? nbd_get_errno () : EIO) : 0;
}

static int
n_pread (void *opaque, void *buf, uint32_t len, uint64_t off)
{
  return nbd_rc (nbd_pread (opaque, buf, len, off, 0));
}

static int
n_pwrite (void *opaque, const void *buf, uint32_t len, uint64_t off)
{
  return nbd_rc (nbd_pwrite (opaque, buf, len, off, 0));
}

static int
n_zero (void *opaque, uint32_t len, uint64_t off)
{
  if (nbd_can_zero (opaque) == 1)
    return nbd_rc (nbd_zero (opaque, len, off, 0));
  return jnl_write_zeroes (n_pwrite, opaque, len, off);
}

static int
n_flush (void *opaque)
{
  /* a server that cannot flush writes through (NBD: no flush advertised) */
  return nbd_can_flush (opaque) == 1 ? nbd_rc (nbd_flush (opaque, 0)) : 0;
}

static int
open_nbd (const char *uri, struct jnl_io *io, uint64_t *size)
{
  struct nbd_handle *h = nbd_create ();
  int64_t sz;

  if (!h) {
    fprintf (stderr, "replctl: journal-replay: %s\n", nbd_get_error ());
    return -1;
  }
  if (nbd_connect_uri (h, uri) == -1 || (sz = nbd_get_size (h)) < 0) {
    fprintf (stderr, "replctl: journal-replay: cannot reach the leg %s: %s\n", uri, nbd_get_error ());
    nbd_close (h);
    return -1;
  }
  if (nbd_is_read_only (h) == 1) {
    fprintf (stderr, "replctl: journal-replay: the leg %s is read-only\n", uri);
    nbd_close (h);
    return -1;
  }
  *io = (struct jnl_io) { h, n_pread, n_pwrite, n_zero, n_flush };
  *size = (uint64_t) sz;
  return 0;
}

static void
close_nbd (struct jnl_io *io)
{
  nbd_shutdown (io->opaque, 0);
  nbd_close (io->opaque);
}
#endif

/* ---- a path ---- */

static int
open_path (const char *path, int *fd, struct jnl_io *io, uint64_t *size)
{
  struct stat st;

  /* a block device exclusively: not under a mounted file system or a
     running replicator */
  int excl = stat (path, &st) == 0 && S_ISBLK (st.st_mode) ? O_EXCL : 0;

  if ((*fd = open (path, O_RDWR | O_CLOEXEC | excl)) < 0 || fstat (*fd, &st) != 0) {
    fprintf (stderr, "replctl: journal-replay: cannot open the leg %s: %s\n", path,
             errno == EBUSY ? "it is in use (mounted, or opened by another program)" : strerror (errno));
    if (*fd >= 0)
      close (*fd);
    return -1;
  }
  if (S_ISBLK (st.st_mode)) {
    if (ioctl (*fd, BLKGETSIZE64, size) != 0) {
      fprintf (stderr, "replctl: journal-replay: %s: size unknown: %s\n", path, strerror (errno));
      close (*fd);
      return -1;
    }
  }
  else if (S_ISREG (st.st_mode))
    *size = (uint64_t) st.st_size;
  else {
    fprintf (stderr, "replctl: journal-replay: %s is neither a file nor a block device\n", path);
    close (*fd);
    return -1;
  }
  jnl_io_fd (io, fd);
  return 0;
}

static bool
is_nbd_uri (const char *s)
{
  return !strncmp (s, "nbd://", 6) || !strncmp (s, "nbds://", 7) ||
    !strncmp (s, "nbd+unix://", 11) || !strncmp (s, "nbds+unix://", 12) ||
    !strncmp (s, "nbd+vsock://", 12) || !strncmp (s, "nbds+vsock://", 13);
}

/* Locate and replay; the result printed.  0 or 1. */
static int
replay_leg (const char *leg, const struct jnl_io *io, uint64_t size)
{
  struct jnl_replay_sum sum;
  struct jnl_super sb;
  struct jnl_geom g;
  char err[512], line[512];
  int rc;

  rc = jnl_locate (io, size, &g, &sb, err, sizeof err);
  if (rc != 0) {
    fprintf (stderr, "replctl: journal-replay: %s: %s\n", leg, err);
    return 1;
  }
  if (jnl_replay (io, &sb, &sum, err, sizeof err) < 0) {
    fprintf (stderr, "replctl: journal-replay: %s: %s\n", leg, err);
    return 1;
  }
  jnl_replay_str (&sum, line, sizeof line);
  printf ("%s: %s\n", leg, line);
  return 0;
}

int
replctl_journal_replay (int nargs, char **args)
{
  struct jnl_io io;
  uint64_t size;
  int fd = -1, rc;

  if (nargs != 1 || args[0][0] == '-') {
    fprintf (stderr, "replctl: usage: journal-replay LEG (a path or an nbd:// or nbd+unix:// URI)\n");
    return 2;
  }
  if (!strncmp (args[0], "iscsi://", 8)) {
    fprintf (stderr, "replctl: journal-replay: iSCSI URIs are not supported: log in to the target "
             "(iscsiadm) and give the LUN's block device\n");
    return 2;
  }
  if (is_nbd_uri (args[0])) {
#ifdef HAVE_LIBNBD
    if (open_nbd (args[0], &io, &size) < 0)
      return 1;
    rc = replay_leg (args[0], &io, size);
    close_nbd (&io);
    return rc;
#else
    fprintf (stderr, "replctl: journal-replay: built without libnbd: NBD URIs are not supported\n");
    return 1;
#endif
  }
  if (open_path (args[0], &fd, &io, &size) < 0)
    return 1;
  rc = replay_leg (args[0], &io, size);
  close (fd);
  return rc;
}
