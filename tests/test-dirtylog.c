/* test-dirtylog: the dirty-log file's open (src/dirtylog.c, dlog_open) when
 * memory runs out, at each of its allocations in turn, for a new file and
 * for an existing one.  Each failure must give -1 with "out of memory",
 * close nothing it did not open (an earlier version closed descriptor 0 on
 * its failure path: its fields were zeroed, and 0 looked like an open
 * file), and leave the file free for the next open (its lock released).
 * Linked with --wrap for the allocators (out of memory on demand). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitmap.h"
#include "dirtylog.h"

/* The fail_in'th allocation from now fails (0 = the next one); -1 = none.
 * failed: one did. */
static int fail_in = -1;
static bool failed;
void *__real_malloc (size_t n);
void *__real_calloc (size_t n, size_t k);
char *__real_strdup (const char *s);
int __real_posix_memalign (void **p, size_t a, size_t n);
void *__wrap_malloc (size_t n);
void *__wrap_calloc (size_t n, size_t k);
char *__wrap_strdup (const char *s);
int __wrap_posix_memalign (void **p, size_t a, size_t n);

static bool
fail_now (void)
{
  if (fail_in < 0 || fail_in-- > 0)
    return false;
  failed = true;
  return true;
}

void *__wrap_malloc (size_t n) { return fail_now () ? NULL : __real_malloc (n); }
void *__wrap_calloc (size_t n, size_t k) { return fail_now () ? NULL : __real_calloc (n, k); }
char *__wrap_strdup (const char *s) { return fail_now () ? NULL : __real_strdup (s); }
int
__wrap_posix_memalign (void **p, size_t a, size_t n)
{
  return fail_now () ? ENOMEM : __real_posix_memalign (p, a, n);
}

static int failures;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf ("FAIL: " __VA_ARGS__); putchar ('\n'); } } while (0)

#define SIZE   (64ull << 20)
#define REGION (64u << 10)

/* One open with the k'th allocation failing; true when the open got that
 * far (the failure happened). */
static bool
open_failing_at (const char *path, int k, bool existing, const struct stat *null0)
{
  struct dlog_id id = { "d0", SIZE, REGION, 1 };
  struct bitmap *b = bitmap_new (SIZE, REGION), *b2;
  struct dlog *d = NULL, *d2 = NULL;
  struct dlog_open_info info;
  char err[256] = "";
  struct stat st;
  int rc;

  if (!b) {
    printf ("FAIL: bitmap_new\n");
    exit (1);
  }
  bitmap_set_range (b, 3 * REGION, REGION);
  failed = false;
  fail_in = k;
  rc = dlog_open (path, &id, b, &d, &info, err, sizeof err);
  fail_in = -1;
  if (!failed) {                          /* fewer than k + 1 allocations: done */
    CHECK (rc == 0, "%s file: the open without a failure: %s", existing ? "existing" : "new", err);
    if (rc == 0)
      dlog_close (d);
    bitmap_free (b);
    return false;
  }
  CHECK (rc == -1, "%s file, allocation %d failing: the open returned %d", existing ? "existing" : "new", k, rc);
  CHECK (strstr (err, "out of memory") != NULL, "%s file, allocation %d failing: the message is '%s'",
         existing ? "existing" : "new", k, err);
  CHECK (fstat (0, &st) == 0 && st.st_ino == null0->st_ino && st.st_dev == null0->st_dev,
         "%s file, allocation %d failing: descriptor 0 was closed", existing ? "existing" : "new", k);
  if (rc == 0)
    dlog_close (d);
  /* the file is free again: the next open (nothing failing) takes it */
  b2 = bitmap_new (SIZE, REGION);
  rc = dlog_open (path, &id, b2, &d2, &info, err, sizeof err);
  CHECK (rc == 0, "%s file, after allocation %d failed: the next open: %s",
         existing ? "existing" : "new", k, err);
  if (rc == 0)
    dlog_close (d2);
  bitmap_free (b2);
  bitmap_free (b);
  return true;
}

int
main (void)
{
  char dir[] = "/tmp/test-dirtylog.XXXXXX", path[64];
  struct stat null0;
  int k, points, pass, fd;

  /* descriptor 0: /dev/null, so that closing it by mistake shows */
  fd = open ("/dev/null", O_RDONLY);
  if (fd == -1 || (fd != 0 && dup2 (fd, 0) == -1) || fstat (0, &null0) == -1) {
    perror ("/dev/null as descriptor 0");
    return 1;
  }
  if (fd != 0)
    close (fd);
  if (!mkdtemp (dir)) {
    perror ("mkdtemp");
    return 1;
  }
  snprintf (path, sizeof path, "%s/d0.bitmap", dir);
  for (pass = 0; pass < 2; pass++) {      /* 0: no file yet; 1: the file exists */
    for (k = 0, points = 0; k < 1000; k++) {
      if (!pass)
        unlink (path);
      if (!open_failing_at (path, k, pass, &null0))
        break;
      points++;
    }
    printf ("%s file: %d allocations, each failed in turn\n", pass ? "existing" : "new", points);
    CHECK (points >= 3, "%s file: only %d allocations seen", pass ? "existing" : "new", points);
  }
  unlink (path);
  rmdir (dir);
  if (failures) {
    printf ("%d check(s) failed\n", failures);
    return 1;
  }
  printf ("ok\n");
  return 0;
}
