/* hold-filter.c: an nbdkit filter for tests that holds one write on demand
 * and lets it through later, when the test says so.  It makes a request
 * land late deterministically: after its connection was dropped and newer
 * writes to the same place were applied over another connection (an
 * in-doubt write, safety rule 5), or it makes a leg lag behind the log for
 * as long as a test needs (safety rule 6).  It can also let a flush through
 * and withhold its answer (arm-flush): the server has done the flush, the
 * client does not know (a lost flush answer; tests/test-receiver.sh i).
 *
 *   nbdkit --filter=tests/.libs/nbdkit-hold-filter.so file IMG \
 *          hold-dir=DIR hold-offset=BYTES
 *
 * Files in DIR are the controls (the test creates and removes them):
 *   arm      present: the next write (pwrite, zero or trim) whose range
 *            contains byte hold-offset is held; the filter removes arm.
 *   held     created by the filter once it holds that write.
 *   release  the held write goes on to the plugin once this exists.
 *   landed   created by the filter after the plugin completed the held
 *            write; holds "ok" or the error number.
 *   arm-flush  present: the next flush goes on to the plugin at once; once
 *            the plugin completed it, the filter writes landed (its result)
 *            and held ("flush 0 0"), removes arm-flush, and withholds the
 *            flush's answer until release exists.
 * Every other request passes at once, also while one is held (in a
 * parallel stack: in front of a plugin that serializes requests, a held
 * request holds up the ones behind it; put the filter in a proxy, e.g.
 * nbdkit's nbd plugin, to hold one answer and let the rest through).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbdkit-filter.h>

static char *hold_dir;
static uint64_t hold_offset;
static bool have_offset;

static int
hold_config (nbdkit_next_config *next, nbdkit_backend *nxdata, const char *key, const char *value)
{
  if (strcmp (key, "hold-dir") == 0) {
    free (hold_dir);
    hold_dir = nbdkit_absolute_path (value);
    return hold_dir ? 0 : -1;
  }
  if (strcmp (key, "hold-offset") == 0) {
    int64_t v = nbdkit_parse_size (value);
    if (v < 0)
      return -1;
    hold_offset = (uint64_t) v;
    have_offset = true;
    return 0;
  }
  return next (nxdata, key, value);
}

static int
hold_config_complete (nbdkit_next_config_complete *next, nbdkit_backend *nxdata)
{
  if (!hold_dir || !have_offset) {
    nbdkit_error ("hold: both hold-dir and hold-offset are required");
    return -1;
  }
  return next (nxdata);
}

static void
hold_unload (void)
{
  free (hold_dir);
}

static int
control_path (char *p, size_t n, const char *name)
{
  if ((size_t) snprintf (p, n, "%s/%s", hold_dir, name) >= n) {
    nbdkit_error ("hold: hold-dir is too long");
    return -1;
  }
  return 0;
}

static void
control_write (const char *name, const char *text)
{
  char p[PATH_MAX], tmp[PATH_MAX];
  int fd;

  if (control_path (p, sizeof p, name) == -1 || snprintf (tmp, sizeof tmp, "%s.tmp", p) >= (int) sizeof tmp)
    return;
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1) {
    nbdkit_error ("hold: %s: %m", tmp);
    return;
  }
  if (write (fd, text, strlen (text)) != (ssize_t) strlen (text))
    nbdkit_error ("hold: writing %s: %m", tmp);
  close (fd);
  if (rename (tmp, p) == -1)            /* appears whole */
    nbdkit_error ("hold: rename %s: %m", p);
}

/* Say what is held (the control held), then wait for the release. */
static void
hold_until_release (const char *what, uint32_t count, uint64_t offset, const char *release)
{
  char text[128];

  nbdkit_debug ("hold: holding %s of %" PRIu32 " bytes at %" PRIu64, what, count, offset);
  snprintf (text, sizeof text, "%s %" PRIu32 " %" PRIu64 "\n", what, count, offset);
  control_write ("held", text);
  while (access (release, F_OK) == -1)
    usleep (10000);
  nbdkit_debug ("hold: releasing %s at %" PRIu64, what, offset);
}

/* Is this request the one to hold?  Then wait for the release. */
static bool
hold_maybe (const char *what, uint32_t count, uint64_t offset)
{
  char arm[PATH_MAX], release[PATH_MAX];

  if (offset > hold_offset || hold_offset - offset >= count)
    return false;
  if (control_path (arm, sizeof arm, "arm") == -1 || control_path (release, sizeof release, "release") == -1)
    return false;
  /* One hold per arm: of two requests racing here, one unlink succeeds.
   * Other requests, to this offset too, pass while one is held. */
  if (unlink (arm) == -1)
    return false;                       /* not armed */
  hold_until_release (what, count, offset, release);
  return true;
}

static void
landed (int r, int err)
{
  char text[32];
  if (r == 0)
    snprintf (text, sizeof text, "ok\n");
  else
    snprintf (text, sizeof text, "error %d\n", err);
  control_write ("landed", text);
}

static int
hold_pwrite (nbdkit_next *next, void *handle, const void *buf, uint32_t count,
             uint64_t offset, uint32_t flags, int *err)
{
  bool held = hold_maybe ("write", count, offset);
  int r = next->pwrite (next, buf, count, offset, flags, err);
  if (offset <= hold_offset && hold_offset - offset < count)   /* nbdkit -v shows the order */
    nbdkit_debug ("hold: %s write at %" PRIu64 " done (r %d), byte at hold-offset 0x%02x",
                  held ? "held" : "passing", offset, r, ((const uint8_t *) buf)[hold_offset - offset]);
  if (held)
    landed (r, *err);
  return r;
}

/* hold_zero and hold_trim have the shape of hold_pwrite (duplicates pairs them),
 * deliberately: one callback per nbdkit operation, each a few lines. */
static int
hold_zero (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
           uint32_t flags, int *err)
{
  bool held = hold_maybe ("zero", count, offset);
  int r = next->zero (next, count, offset, flags, err);
  if (held)
    landed (r, *err);
  return r;
}

static int
hold_trim (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
           uint32_t flags, int *err)
{
  bool held = hold_maybe ("trim", count, offset);
  int r = next->trim (next, count, offset, flags, err);
  if (held)
    landed (r, *err);
  return r;
}

/* arm-flush: the flush runs in the plugin first; only its answer waits. */
static int
hold_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  char arm[PATH_MAX], release[PATH_MAX];
  int r = next->flush (next, flags, err);

  if (control_path (arm, sizeof arm, "arm-flush") == -1 ||
      control_path (release, sizeof release, "release") == -1 || unlink (arm) == -1)
    return r;                           /* not armed: answer at once */
  landed (r, *err);
  hold_until_release ("flush", 0, 0, release);
  return r;
}

static struct nbdkit_filter filter = {
  .name = "hold",
  .longname = "nbd-replicator test filter: hold one write or flush answer until released",
  .config = hold_config,
  .config_complete = hold_config_complete,
  .config_help = "hold-dir=<DIR>      control files arm, arm-flush, held, release, landed\n"
                 "hold-offset=<BYTES> the held write is the next one containing this byte",
  .unload = hold_unload,
  .pwrite = hold_pwrite,
  .zero = hold_zero,
  .trim = hold_trim,
  .flush = hold_flush,
};

NBDKIT_REGISTER_FILTER (filter)
