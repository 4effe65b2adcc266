/* forget-filter.c: an nbdkit filter for tests: a disk that forgets what a
 * failed flush was to make durable, the way Linux's page cache does after
 * a writeback error ("fsyncgate"): the dirty pages are dropped, the error
 * is reported once, and the next fsync returns 0.
 *
 * Writes (pwrite, zero, trim) are held in memory, in order, and read back
 * from there until a flush sends them to the plugin and flushes it.  While
 * the trigger file (forget-file=PATH) exists, a flush instead drops every
 * write held since the last good flush and fails with EIO; once the file
 * is gone, flushes succeed again, and the dropped writes are not on the
 * disk.  A trigger file whose content starts with "once" fails one flush
 * and is then removed by the filter.  A FUA write is a write and a flush.
 * All requests are serialized.
 *
 *   nbdkit --filter=tests/.libs/nbdkit-forget-filter.so file disk.img forget-file=$T/forget
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbdkit-filter.h>

struct held {
  uint64_t off;
  uint32_t len;
  uint8_t *data;                 /* NULL: zeroes */
};

static char *trigger;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct held *held;
static size_t nheld, held_cap;
static uint64_t flushes_failed, writes_forgotten;

/* Config parsing and the callback table have the shape of hold-filter.c's (duplicates
 * pairs them), deliberately: each test filter is one stand-alone file, built into its own
 * .so; the table lists every callback the filter answers. */
static int
forget_config (nbdkit_next_config *next, nbdkit_backend *nxdata, const char *key, const char *value)
{
  if (strcmp (key, "forget-file") == 0) {
    free (trigger);
    trigger = nbdkit_absolute_path (value);
    return trigger ? 0 : -1;
  }
  return next (nxdata, key, value);
}

static void
forget_unload (void)
{
  size_t i;
  for (i = 0; i < nheld; i++)
    free (held[i].data);
  free (held);
  free (trigger);
}

static int
forget_can_fua (nbdkit_next *next, void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

static int
forget_can_flush (nbdkit_next *next, void *handle)
{
  return next->can_flush (next);         /* also primes next->flush */
}

static int
forget_can_multi_conn (nbdkit_next *next, void *handle)
{
  return 1;                      /* one store for every connection */
}

static int
forget_can_extents (nbdkit_next *next, void *handle)
{
  return 0;                      /* the plugin's extents do not know what is held */
}

static int
forget_can_cache (nbdkit_next *next, void *handle)
{
  return NBDKIT_CACHE_NONE;
}

static int
forget_can_fast_zero (nbdkit_next *next, void *handle)
{
  return 0;
}

/* Hold a write (data NULL: zeroes).  Called with the lock held. */
static int
hold (const void *data, uint32_t count, uint64_t offset, int *err)
{
  struct held *h;

  if (nheld == held_cap) {
    size_t cap = held_cap ? held_cap * 2 : 64;
    struct held *n = realloc (held, cap * sizeof *held);
    if (!n) {
      *err = ENOMEM;
      return -1;
    }
    held = n;
    held_cap = cap;
  }
  h = &held[nheld];
  h->off = offset;
  h->len = count;
  h->data = NULL;
  if (data) {
    if (!(h->data = malloc (count ? count : 1))) {
      *err = ENOMEM;
      return -1;
    }
    memcpy (h->data, data, count);
  }
  nheld++;
  return 0;
}

static void
drop_held (void)
{
  size_t i;
  for (i = 0; i < nheld; i++)
    free (held[i].data);
  nheld = 0;
}

/* The held writes to the plugin and a flush of it, or (trigger present)
 * forget them and fail.  Called with the lock held. */
static int
flush_held (nbdkit_next *next, int *err)
{
  size_t i;

  if (trigger && access (trigger, F_OK) == 0) {
    FILE *f = fopen (trigger, "r");
    char word[8] = "";
    if (f) {
      if (!fgets (word, sizeof word, f))
        word[0] = '\0';
      fclose (f);
    }
    if (strncmp (word, "once", 4) == 0)
      unlink (trigger);
    flushes_failed++;
    writes_forgotten += nheld;
    nbdkit_debug ("forget: flush failed on purpose: %zu writes since the last good flush "
                  "forgotten (%" PRIu64 " failed flushes so far)", nheld, flushes_failed);
    drop_held ();
    *err = EIO;
    return -1;
  }
  for (i = 0; i < nheld; i++) {
    struct held *h = &held[i];
    int r;
    if (h->data)
      r = next->pwrite (next, h->data, h->len, h->off, 0, err);
    else
      r = next->zero (next, h->len, h->off, 0, err);
    if (r == -1) {
      drop_held ();              /* as lost as after a failed flush */
      return -1;
    }
  }
  drop_held ();
  return next->flush (next, 0, err);
}

static int
forget_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  size_t i;
  int r;

  pthread_mutex_lock (&lock);
  r = next->pread (next, buf, count, offset, flags, err);
  for (i = 0; r == 0 && i < nheld; i++) {
    const struct held *h = &held[i];
    uint64_t s = h->off > offset ? h->off : offset;
    uint64_t e = h->off + h->len < offset + count ? h->off + h->len : offset + count;
    if (s >= e)
      continue;
    if (h->data)
      memcpy ((uint8_t *) buf + (s - offset), h->data + (s - h->off), e - s);
    else
      memset ((uint8_t *) buf + (s - offset), 0, e - s);
  }
  pthread_mutex_unlock (&lock);
  return r;
}

static int
write_common (nbdkit_next *next, const void *data, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  int r;

  pthread_mutex_lock (&lock);
  r = hold (data, count, offset, err);
  if (r == 0 && (flags & NBDKIT_FLAG_FUA))
    r = flush_held (next, err);
  pthread_mutex_unlock (&lock);
  return r;
}

static int
forget_pwrite (nbdkit_next *next, void *handle, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  return write_common (next, buf, count, offset, flags, err);
}

static int
forget_zero (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  return write_common (next, NULL, count, offset, flags, err);
}

static int
forget_trim (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  return write_common (next, NULL, count, offset, flags, err);
}

static int
forget_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  int r;
  pthread_mutex_lock (&lock);
  r = flush_held (next, err);
  pthread_mutex_unlock (&lock);
  return r;
}

/* Every callback listed (duplicates pairs the .can_* and I/O lines by shape), deliberately. */
static struct nbdkit_filter filter = {
  .name = "forget",
  .longname = "nbd-replicator test filter: a disk that forgets after a failed flush",
  .config = forget_config,
  .config_help = "forget-file=<PATH>  while it exists, a flush drops the writes since the last "
                 "good flush and fails with EIO (content \"once\": one flush, then it is removed)",
  .unload = forget_unload,
  .can_fua = forget_can_fua,
  .can_flush = forget_can_flush,
  .can_multi_conn = forget_can_multi_conn,
  .can_extents = forget_can_extents,
  .can_cache = forget_can_cache,
  .can_fast_zero = forget_can_fast_zero,
  .pread = forget_pread,
  .pwrite = forget_pwrite,
  .zero = forget_zero,
  .trim = forget_trim,
  .flush = forget_flush,
};

NBDKIT_REGISTER_FILTER (filter)
