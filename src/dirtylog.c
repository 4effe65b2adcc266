/* dirtylog.c: persistent dirty logs.
 *
 * Owns: the dirty-log file of one leg (dirty_log type "disk"): its format
 * (below), creating it, reading it into the leg's bitmap at open,
 * writing the bitmap's changed pages back and syncing them (dlog_flush),
 * invalidating it.
 * Invariants: the file is locked (flock) while open; a page that cannot
 * be trusted reads as all ones, never as clean; after a failed write or
 * sync every page written since the last good sync is written again
 * through a new descriptor (safety rule 13).
 * May call: utilities (bitmap, crc32c, io, pftrace).  Its callers (the
 * replicator, through the log's dl_sync_fn) call dlog_flush; nothing here
 * calls up.
 *
 * DIRTY LOG FILE FORMAT (version 1)
 * =================================
 *
 * All integers little-endian.  The file is a header page followed by
 * bitmap pages, each 4096 bytes:
 *
 *   page 0: header
 *      0   8  magic "NBDRDLOG"
 *      8   4  version (1)
 *     12   4  page size (4096)
 *     16   8  salt: random per file; seeds every checksum, so pages of
 *             another file (or an older incarnation of this one) never
 *             validate here
 *     24   8  device size in bytes
 *     32   8  region size in bytes (a power of two)
 *     40   8  nbits = ceil(device size / region size)
 *     48   4  site id
 *     52   4  npages = ceil(ceil(nbits / 64) / 511)
 *     56  64  device name, NUL-padded
 *    120 ...  zero
 *   4092   4  crc32c(salt, bytes 0..4091)
 *
 *   page k + 1 (k = 0 .. npages - 1): bits of regions [k * 32704, (k + 1) * 32704)
 *      0 4088  511 64-bit words; bit b of word w is region k*32704 + w*64 + b
 *   4088    4  k
 *   4092    4  crc32c(salt, bytes 0..4091)
 *
 * A set bit means the leg may lack the newest data of that region.
 *
 * The header is written once, when the file is created (written to a
 * temporary file, synced, renamed: it never tears).  Pages are rewritten
 * in place when their bits changed; a page write that tears fails its
 * checksum, and a page that fails its checks is read as all ones: a torn
 * or corrupt page costs a resync of its regions, never a lost one.  A
 * missing page (a truncated file) is read the same way.  A header that
 * fails its checks makes the whole bitmap all ones (the file is
 * recreated); a valid header naming another device, size, region size or
 * site is refused.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "dirtylog.h"
#include "io.h"
#include "pftrace.h"

#define DLOG_MAGIC   "NBDRDLOG"
#define DLOG_VERSION 1u
#define BITS_PER_PAGE ((uint64_t) DLOG_WORDS_PER_PAGE * 64)

struct dlog_header {
  char magic[8];
  uint32_t version;
  uint32_t page_size;
  uint64_t salt;
  uint64_t size;
  uint64_t region_size;
  uint64_t nbits;
  uint32_t site;
  uint32_t npages;
  char device[64];
  uint8_t zero[4092 - 120];
  uint32_t crc;
};
_Static_assert (sizeof (struct dlog_header) == 4096, "dirty log header is one page");

struct dlog {
  char *path;
  int fd;                        /* pages are written and synced through it */
  int lock_fd;                   /* the first descriptor: holds the flock (one owner,
                                    safety rule 8); fd is another one after a reopen */
  uint64_t salt;
  struct bitmap *b;
  uint8_t *page;                 /* one page, aligned */
  uint8_t *unsynced;             /* per page: written since the file's last good sync */
  pthread_mutex_t lock;          /* one flush or invalidation at a time; guards fd,
                                    page, unsynced, reopen, invalid once open */
  bool reopen;                   /* a write or sync failed: reopen before the next one */
  bool invalid;
};

static uint32_t
page_crc (uint64_t salt, const void *p)
{
  return crc32c (crc32c (0, &salt, sizeof salt), p, 4092);
}

static uint64_t
npages_of (uint64_t nbits)
{
  uint64_t words = (nbits + 63) / 64;
  return words ? (words + DLOG_WORDS_PER_PAGE - 1) / DLOG_WORDS_PER_PAGE : 1;
}

/* Fill d->page with page k of the bitmap. */
static void
build_page (struct dlog *d, uint64_t k)
{
  uint64_t nwords = (d->b->nbits + 63) / 64, w;
  uint32_t idx = (uint32_t) k, crc;

  memset (d->page, 0, DLOG_PAGE_SIZE);
  for (w = 0; w < DLOG_WORDS_PER_PAGE && k * DLOG_WORDS_PER_PAGE + w < nwords; w++) {
    uint64_t v = __atomic_load_n (&d->b->words[k * DLOG_WORDS_PER_PAGE + w], __ATOMIC_ACQUIRE);
    memcpy (d->page + w * 8, &v, 8);
  }
  memcpy (d->page + 4088, &idx, 4);
  crc = page_crc (d->salt, d->page);
  memcpy (d->page + 4092, &crc, 4);
}

static int
write_page (struct dlog *d, int fd, uint64_t k)
{
  build_page (d, k);
  return io_pwrite_full (fd, d->page, DLOG_PAGE_SIZE, (off_t) ((k + 1) * DLOG_PAGE_SIZE));
}

/* Create the file with b's bits: temporary file, sync, rename. */
static int
create_file (struct dlog *d, const struct dlog_id *id, char *err, size_t errlen)
{
  struct dlog_header h;
  char *tmp = NULL;
  uint64_t k, np = npages_of (d->b->nbits);
  int fd = -1;

  if (getrandom (&d->salt, sizeof d->salt, 0) != sizeof d->salt)
    d->salt = (uint64_t) time (NULL) ^ ((uint64_t) getpid () << 32);
  memset (&h, 0, sizeof h);
  memcpy (h.magic, DLOG_MAGIC, 8);
  h.version = DLOG_VERSION;
  h.page_size = DLOG_PAGE_SIZE;
  h.salt = d->salt;
  h.size = id->size;
  h.region_size = id->region_size;
  h.nbits = d->b->nbits;
  h.site = id->site;
  h.npages = (uint32_t) np;
  snprintf (h.device, sizeof h.device, "%s", id->device);
  h.crc = page_crc (d->salt, &h);
  if (asprintf (&tmp, "%s.new", d->path) == -1) {
    snprintf (err, errlen, "out of memory");
    return -1;
  }
  fd = open (tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || io_pwrite_full (fd, &h, sizeof h, 0) == -1)
    goto fail;
  for (k = 0; k < np; k++)
    if (write_page (d, fd, k) == -1)
      goto fail;
  pft_create (fd);                         /* power-loss trace: a new name */
  if (fdatasync (fd) == -1 || rename (tmp, d->path) == -1)
    goto fail;
  pft_rename (tmp, d->path);               /* power-loss trace: created whole */
  /* Safety rule 14: the new name must survive a power loss before the log
   * releases an entry on the strength of the bits in this file. */
  if (io_sync_parent_dir (d->path) == -1) {
    snprintf (err, errlen, "creating %s: syncing its directory (so that its name survives a "
              "power loss): %s", d->path, strerror (errno));
    close (fd);
    free (tmp);
    return -1;
  }
  free (tmp);
  d->fd = fd;
  return 0;
 fail:
  snprintf (err, errlen, "creating %s: %s", d->path, strerror (errno));
  if (fd >= 0) {
    close (fd);
    unlink (tmp);
  }
  free (tmp);
  return -1;
}

/* Read the file into b (OR).  1 = header unusable (recreate), 0 ok, -1 refused. */
static int
load_file (struct dlog *d, int fd, const struct dlog_id *id, struct dlog_open_info *info,
           char *err, size_t errlen)
{
  struct dlog_header h;
  struct stat st;
  uint64_t k, np = npages_of (d->b->nbits), nwords = (d->b->nbits + 63) / 64;
  ssize_t r;

  if (fstat (fd, &st) == -1) {
    snprintf (err, errlen, "%s: %s", d->path, strerror (errno));
    return -1;
  }
  r = pread (fd, &h, sizeof h, 0);
  if (r != (ssize_t) sizeof h || memcmp (h.magic, DLOG_MAGIC, 8) != 0 ||
      h.version != DLOG_VERSION || h.page_size != DLOG_PAGE_SIZE || h.crc != page_crc (h.salt, &h))
    return 1;
  if (h.size != id->size || h.region_size != id->region_size || h.site != id->site ||
      strncmp (h.device, id->device, sizeof h.device) != 0 || h.nbits != d->b->nbits) {
    snprintf (err, errlen, "%s is the dirty log of device '%.64s' (%" PRIu64 " bytes, regions of %"
              PRIu64 ", site %u), not of device '%s' (%" PRIu64 " bytes, regions of %" PRIu64
              ", site %u): refusing to use it (remove it for a full resync)", d->path, h.device,
              h.size, h.region_size, h.site, id->device, id->size, id->region_size, id->site);
    return -1;
  }
  d->salt = h.salt;
  for (k = 0; k < np; k++) {
    uint32_t idx, crc;
    uint64_t w;
    bool good = (uint64_t) st.st_size >= (k + 2) * DLOG_PAGE_SIZE &&
      pread (fd, d->page, DLOG_PAGE_SIZE, (off_t) ((k + 1) * DLOG_PAGE_SIZE)) == DLOG_PAGE_SIZE;
    if (good) {
      memcpy (&idx, d->page + 4088, 4);
      memcpy (&crc, d->page + 4092, 4);
      good = idx == k && crc == page_crc (d->salt, d->page);
    }
    if (!good) {
      info->bad_pages++;
      memset (d->page, 0xff, 4088);
    }
    for (w = 0; w < DLOG_WORDS_PER_PAGE && k * DLOG_WORDS_PER_PAGE + w < nwords; w++) {
      uint64_t v;
      memcpy (&v, d->page + w * 8, 8);
      if (k * DLOG_WORDS_PER_PAGE + w == nwords - 1 && d->b->nbits % 64)
        v &= (1ull << (d->b->nbits % 64)) - 1;     /* no bits past the last region */
      info->bits_loaded += (uint64_t) __builtin_popcountll (v);
      d->b->words[k * DLOG_WORDS_PER_PAGE + w] |= v;
    }
  }
  return 0;
}

/* Take the file's exclusive lock (one owner, safety rule 8) and check
 * that fd is still the file at d->path (not one another instance replaced
 * while we opened it).  0, or -1 with one line in err. */
static int
lock_file (struct dlog *d, int fd, char *err, size_t errlen)
{
  struct stat a, b;

  if (flock (fd, LOCK_EX | LOCK_NB) == -1) {
    if (errno == EWOULDBLOCK)
      snprintf (err, errlen, "%s is locked by another instance (only one may own a dirty "
                "log; if one was just stopped or killed, retry in a moment)", d->path);
    else
      snprintf (err, errlen, "%s: flock: %s", d->path, strerror (errno));
    return -1;
  }
  if (fstat (fd, &a) == -1 || stat (d->path, &b) == -1 ||
      a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
    snprintf (err, errlen, "%s was replaced while being opened: locked by another instance?",
              d->path);
    return -1;
  }
  return 0;
}

/* The file at path if it exists: opened, locked (before it is read or
 * recreated: another instance's file is neither trusted nor replaced) and
 * read into b.  0 with d->fd set if it is to be used; 0 with d->fd still
 * -1 if there is none or it is to be recreated (a bad header: b all ones,
 * info->header_bad); -1 on an error (err). */
static int
open_existing (struct dlog *d, const char *path, const struct dlog_id *id, struct bitmap *b,
               struct dlog_open_info *info, char *err, size_t errlen)
{
  struct stat st;
  int fd = open (path, O_RDWR | O_CLOEXEC), r;

  if (fd == -1) {
    if (errno == ENOENT)
      return 0;
    snprintf (err, errlen, "%s: %s", path, strerror (errno));
    return -1;
  }
  if (lock_file (d, fd, err, errlen) == -1)
    goto fail;
  if (fstat (fd, &st) == 0 && st.st_size == 0)
    r = 2;                               /* empty: created by hand, or by a crash before rename */
  else if ((r = load_file (d, fd, id, info, err, errlen)) == -1)
    goto fail;
  if (r == 1) {
    info->header_bad = true;
    bitmap_set_all (b);
  }
  if (r != 0) {
    close (fd);
    return 0;
  }
  /* Safety rule 14 again: a crash between a creation's rename and its
   * directory sync left a name that no sync has made durable yet. */
  if (io_sync_parent_dir (path) == -1) {
    snprintf (err, errlen, "%s: syncing its directory (so that its name survives a power "
              "loss): %s", path, strerror (errno));
    goto fail;
  }
  d->fd = fd;
  return 0;
 fail:
  close (fd);
  return -1;
}

int
dlog_open (const char *path, const struct dlog_id *id, struct bitmap *b,
           struct dlog **out, struct dlog_open_info *info, char *err, size_t errlen)
{
  struct dlog *d = calloc (1, sizeof *d);

  memset (info, 0, sizeof *info);
  if (d)
    d->fd = d->lock_fd = -1;             /* the failure path must not close fd 0 */
  if (!d || !(d->path = strdup (path)) ||
      posix_memalign ((void **) &d->page, 4096, DLOG_PAGE_SIZE) != 0) {
    snprintf (err, errlen, "out of memory");
    goto fail;
  }
  d->fd = d->lock_fd = -1;
  d->b = b;
  pthread_mutex_init (&d->lock, NULL);
  if (open_existing (d, path, id, b, info, err, errlen) == -1)
    goto fail;
  if (d->fd == -1) {
    info->created = !info->header_bad;
    if (create_file (d, id, err, errlen) == -1)
      goto fail;
    if (lock_file (d, d->fd, err, errlen) == -1)
      goto fail;
  }
  d->lock_fd = d->fd;
  if (bitmap_track_pages (b, DLOG_WORDS_PER_PAGE) == -1 ||
      !(d->unsynced = calloc ((size_t) b->npages, 1))) {
    snprintf (err, errlen, "out of memory");
    goto fail;
  }
  if (!info->created && (info->bad_pages || info->header_bad)) {
    /* The bits set for unreadable pages go to the file at the next flush. */
    uint64_t k;
    for (k = 0; k < b->npages; k++)
      b->changed[k] = 1;
    b->any_changed = 1;
  }
  *out = d;
  return 0;
 fail:
  if (d) {
    if (d->fd >= 0)
      close (d->fd);
    free (d->unsynced);
    free (d->page);
    free (d->path);
    free (d);
  }
  return -1;
}

/* Writing anew after a failure: a new descriptor of the same file (the
 * old one may keep reporting, or hiding, the failure; safety rule 13). */
static int
reopen_file (struct dlog *d)
{
  struct stat a, b;
  int fd = open (d->path, O_RDWR | O_CLOEXEC);

  if (fd == -1)
    return -1;
  if (fstat (fd, &a) == -1 || fstat (d->lock_fd, &b) == -1 ||
      a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
    close (fd);
    errno = ESTALE;                      /* not our (locked) file any more */
    return -1;
  }
  if (d->fd != d->lock_fd)
    close (d->fd);
  d->fd = fd;
  return 0;
}

/* Write the changed pages and sync them.  On a failure, every page
 * written since the file's last good sync is marked changed again: after a
 * failed fdatasync the kernel may have dropped any of them and will not
 * say so twice (safety rule 13). */
static int
flush_pages (struct dlog *d)
{
  struct bitmap *b = d->b;
  uint64_t k;
  int e = 0;

  if (!__atomic_exchange_n (&b->any_changed, 0, __ATOMIC_ACQ_REL))
    return 0;
  for (k = 0; k < b->npages && !e; k++) {
    if (!__atomic_exchange_n (&b->changed[k], 0, __ATOMIC_ACQ_REL))
      continue;
    d->unsynced[k] = 1;
    if (write_page (d, d->fd, k) == -1)
      e = errno;
  }
  if (!e) {
    pft_sync (d->fd, 'S');
    if (fdatasync (d->fd) == -1)
      e = errno;
    else
      pft_sync (d->fd, 'D');
  }
  if (!e) {
    memset (d->unsynced, 0, (size_t) b->npages);
    return 0;
  }
  for (k = 0; k < b->npages; k++)
    if (d->unsynced[k])
      __atomic_store_n (&b->changed[k], 1, __ATOMIC_RELEASE);
  __atomic_store_n (&b->any_changed, 1, __ATOMIC_RELEASE);
  errno = e;
  return -1;
}

int
dlog_flush (struct dlog *d)
{
  int r, e;

  pthread_mutex_lock (&d->lock);
  if (d->invalid) {
    pthread_mutex_unlock (&d->lock);
    return 0;
  }
  if (d->reopen) {                       /* an earlier call failed */
    if (reopen_file (d) == -1) {
      e = errno;
      pthread_mutex_unlock (&d->lock);
      errno = e;
      return -1;
    }
    d->reopen = false;
  }
  r = flush_pages (d);
  if (r == -1) {
    /* Once more at once, through a new descriptor: the pages go again. */
    e = errno;
    if (reopen_file (d) == 0 && flush_pages (d) == 0)
      r = 1;
    else
      d->reopen = true;
    errno = e;
  }
  e = errno;
  pthread_mutex_unlock (&d->lock);
  errno = e;
  return r;
}

void
dlog_invalidate (struct dlog *d)
{
  pthread_mutex_lock (&d->lock);
  d->invalid = true;
  /* Cut to the header: every page then reads as missing (all dirty).  If
   * even that fails, remove the file: a missing file is all dirty too
   * for a site that needs a resync. */
  pft_truncate (d->fd, DLOG_PAGE_SIZE);
  if (ftruncate (d->fd, DLOG_PAGE_SIZE) == -1 || fdatasync (d->fd) == -1)
    (void) !unlink (d->path);
  pthread_mutex_unlock (&d->lock);
}

const char *
dlog_path (const struct dlog *d)
{
  return d->path;
}

void
dlog_close (struct dlog *d)
{
  if (!d)
    return;
  if (d->fd >= 0 && d->fd != d->lock_fd)
    close (d->fd);
  if (d->lock_fd >= 0)
    close (d->lock_fd);
  pthread_mutex_destroy (&d->lock);
  free (d->unsynced);
  free (d->page);
  free (d->path);
  free (d);
}
