/* leg.c: one leg's synchronous I/O (layer 3, under the device view and
 * the workers).
 *
 * Owns: opening a path leg (file or block device: size, block size,
 * O_DIRECT, the exclusive lock), synchronous reads of any leg (a per-thread
 * aligned bounce buffer for O_DIRECT; a remote leg's reader connection),
 * where a leg's holes end, and flushing a leg's dirty-log file.  The
 * workers' asynchronous I/O on legs is theirs.  Calls down only: io,
 * links (rreader), dirty logs, reports.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "dirtylog.h"
#include "io.h"
#include "link.h"
#include "replicator.h"
#include "report.h"

const char *
leg_state_name (enum leg_state s)
{
  switch (s) {
  case LEG_REPLICATING: return "replicating";
  case LEG_BEHIND: return "behind";
  case LEG_DISCONNECTED: return "disconnected";
  case LEG_DIRTY_LOG_MODE: return "dirty";
  case LEG_RESYNCING: return "resyncing";
  case LEG_FAILED: return "failed";
  }
  return "?";
}

static uint32_t
dio_alignment (int fd, bool is_blk)
{
  int lbs = 0;

  if (is_blk && ioctl (fd, BLKSSZGET, &lbs) == 0 && lbs > 0)
    return (uint32_t) lbs;
#ifdef STATX_DIOALIGN
  {
    struct statx stx;
    if (statx (fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
      return stx.stx_dio_offset_align > 512 ? stx.stx_dio_offset_align : 512;
  }
#endif
  return 512;
}

int
leg_open_local (struct leg *l, const char *path)
{
  struct stat st;
  int flags = O_RDWR | O_CLOEXEC;
  const char *what = l->site == 0 ? "local leg" : "leg";

  if (stat (path, &st) == -1) {
    rep_error ("device '%s': %s %s: %m", l->dev->name, what, path);
    return -1;
  }
  l->is_blk = S_ISBLK (st.st_mode);
  if (!l->is_blk && !S_ISREG (st.st_mode)) {
    rep_error ("device '%s': %s %s is neither a file nor a block device", l->dev->name, what, path);
    return -1;
  }
  if (l->is_blk)
    flags |= O_EXCL;
  l->fd = l->cfg->direct_io ? open (path, flags | O_DIRECT) : -1;
  l->direct = l->fd >= 0;
  if (!l->cfg->direct_io)
    l->fd = open (path, flags);                 /* page cache for reads and writes */
  else if (l->fd == -1 && errno == EINVAL) {    /* tmpfs and friends */
    l->fd = open (path, flags);
    if (l->fd >= 0)
      rep_warn ("device '%s': %s %s does not support O_DIRECT; using the page cache",
                l->dev->name, what, path);
  }
  if (l->fd == -1) {
    if (errno == EBUSY)
      rep_error ("device '%s': %s %s is in use (opened exclusively elsewhere)", l->dev->name, what, path);
    else
      rep_error ("device '%s': %s %s: %m", l->dev->name, what, path);
    return -1;
  }
  if (!l->is_blk && flock (l->fd, LOCK_EX | LOCK_NB) == -1) {
    rep_error ("device '%s': %s %s is locked by another instance (if one was just "
               "stopped or killed, it may still be finishing its writes: retry in a moment)",
               l->dev->name, what, path);
    return -1;
  }
  if (l->is_blk) {
    if (ioctl (l->fd, BLKGETSIZE64, &l->size) == -1) {
      rep_error ("device '%s': %s %s: BLKGETSIZE64: %m", l->dev->name, what, path);
      return -1;
    }
  }
  else
    l->size = (uint64_t) st.st_size;
  /* A block device's logical block size counts with or without O_DIRECT:
   * the device advertises it (safety rule 11). */
  l->lbs = l->direct || l->is_blk ? dio_alignment (l->fd, l->is_blk) : 512;
  l->zero_range_ok = l->punch_ok = true;
  return 0;
}

/* Per-thread aligned bounce buffer for O_DIRECT reads. */
static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;
struct bounce {
  void *p;
  size_t len;
};

static void
bounce_free (void *v)
{
  struct bounce *b = v;
  free (b->p);
  free (b);
}

static void
bounce_init (void)
{
  pthread_key_create (&bounce_key, bounce_free);
}

static void *
bounce_get (size_t len)
{
  struct bounce *b;

  pthread_once (&bounce_once, bounce_init);
  b = pthread_getspecific (bounce_key);
  if (!b) {
    if (!(b = calloc (1, sizeof *b)))
      return NULL;
    pthread_setspecific (bounce_key, b);
  }
  if (b->len < len) {
    void *p;
    if (posix_memalign (&p, 4096, len) != 0)
      return NULL;
    free (b->p);
    b->p = p;
    b->len = len;
  }
  return b->p;
}

/* Read [off, off+len) of a leg into buf, honouring O_DIRECT alignment. */
int
leg_read (struct leg *l, void *buf, uint32_t len, uint64_t off)
{
  uint64_t a = l->lbs, s, e;
  uint8_t *b;

  if (!l->direct ||
      ((uintptr_t) buf % 4096 == 0 && off % a == 0 && len % a == 0))
    return io_pread_full (l->fd, buf, len, off, true);
  s = off & ~(a - 1);
  e = (off + len + a - 1) & ~(a - 1);
  if (!(b = bounce_get ((size_t) (e - s))))
    return -1;
  if (io_pread_full (l->fd, b, (size_t) (e - s), s, true) == -1)
    return -1;
  memcpy (buf, b + (off - s), len);
  return 0;
}

int
leg_pread_any (struct leg *l, void *buf, uint32_t len, uint64_t off, char *err, size_t errlen)
{
  err[0] = 0;
  if (l->remote)
    return rreader_pread (&l->reader, buf, len, off, err, errlen);
  if (leg_read (l, buf, len, off) == -1) {
    int e = errno;
    snprintf (err, errlen, "reading %s at %" PRIu64 ": %s", l->cfg->path, off, strerror (e));
    return -e;
  }
  return 0;
}

/* A remote leg's block status, a file's holes (SEEK_DATA); off for a
 * block device. */
uint64_t
leg_hole_end (struct leg *l, uint64_t off, uint64_t len)
{
  uint64_t end;
  off_t data;

  if (l->remote)
    return rreader_zero_end (&l->reader, off, (uint32_t) len, &end) == 0 ? end : off;
  if (l->is_blk)
    return off;
  data = lseek (l->fd, (off_t) off, SEEK_DATA);
  if (data == -1)
    return errno == ENXIO ? off + len : off;   /* ENXIO: no data up to EOF */
  return (uint64_t) data > off + len ? off + len : (uint64_t) data;
}

int
leg_dlog_flush (struct leg *l)
{
  int rc = dlog_flush (l->dlog);

  if (rc == 1)
    rep_warn ("device '%s': writing dirty log %s of the leg at site %u failed (%m); every "
              "page written since its last good sync was written again after reopening "
              "it, and synced", l->dev->name, dlog_path (l->dlog), l->site);
  return rc == -1 ? -1 : 0;
}

