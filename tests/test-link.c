/* Unit test: remote-link helpers (link.c) and the region bitmap (bitmap.c). */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bitmap.h"
#include "link.h"

static int failures;

static void
expect_str (const char *what, const char *got, const char *want)
{
  if (strcmp (got, want) != 0) {
    fprintf (stderr, "%s: got '%s', want '%s'\n", what, got, want);
    failures++;
  }
}

int
main (void)
{
  char buf[512];
  struct bitmap *b;

  /* Inline CHAP passwords never reach logs or status. */
  link_redact ("iscsi://u%secret@h/iqn.x:y/1", buf, sizeof buf);
  expect_str ("redact inline", buf, "iscsi://u%***@h/iqn.x:y/1");
  link_redact ("iscsi://u%s3cr%et@h:3261/iqn.x:y/1", buf, sizeof buf);
  expect_str ("redact with %", buf, "iscsi://u%***@h:3261/iqn.x:y/1");
  link_redact ("iscsi://u%+/etc/pw@h/iqn.x:y/1", buf, sizeof buf);
  expect_str ("password file kept", buf, "iscsi://u%+/etc/pw@h/iqn.x:y/1");
  link_redact ("iscsi://h/iqn.x:y/1", buf, sizeof buf);
  expect_str ("no credentials", buf, "iscsi://h/iqn.x:y/1");
  link_redact ("nbd+unix:///a%b?socket=/x@y", buf, sizeof buf);
  expect_str ("nbd untouched", buf, "nbd+unix:///a%b?socket=/x@y");

  expect_str ("secret file", link_secret_file ("iscsi://u%+/etc/pw@h/iqn.x:y/1", buf, sizeof buf)
              ? buf : "(none)", "/etc/pw");
  if (link_secret_file ("iscsi://u%pw@h/iqn.x:y/1", buf, sizeof buf) ||
      link_secret_file ("iscsi://h/iqn.x:y/1", buf, sizeof buf)) {
    fprintf (stderr, "secret file found where there is none\n");
    failures++;
  }

  /* Errors that mean "reconnect and re-send", and ones that do not. */
  assert (link_conn_error (-ENOTCONN) && link_conn_error (-ECONNRESET) &&
          link_conn_error (-EPIPE) && link_conn_error (-ETIMEDOUT));
  assert (!link_conn_error (-EIO) && !link_conn_error (-ENOSPC) && !link_conn_error (0));

  /* Bitmap: regions touched by a range, bounds, all. */
  b = bitmap_new (10 * 65536 + 100, 65536);      /* 11 regions, the last partial */
  assert (b && b->nbits == 11 && bitmap_count (b) == 0);
  bitmap_set_range (b, 65535, 2);                /* straddles regions 0 and 1 */
  assert (bitmap_count (b) == 2);
  bitmap_set_range (b, 65536, 65536);            /* region 1 again */
  assert (bitmap_count (b) == 2);
  bitmap_set_range (b, 10 * 65536, 1000);        /* past the end: clipped */
  assert (bitmap_count (b) == 3);
  bitmap_set_range (b, 20 * 65536, 10);          /* beyond: ignored */
  bitmap_set_range (b, 0, 0);                    /* empty: ignored */
  assert (bitmap_count (b) == 3);
  bitmap_set_all (b);
  assert (bitmap_count (b) == 11);
  bitmap_free (b);
  b = bitmap_new ((uint64_t) 1 << 40, 65536);    /* 1 TiB: 2 MiB of bits */
  assert (b && b->nbits == (1u << 24));
  bitmap_set_range (b, ((uint64_t) 1 << 40) - 1, 1);
  assert (bitmap_count (b) == 1);
  bitmap_free (b);

  if (failures)
    return 1;
  printf ("link and bitmap helpers: ok\n");
  return 0;
}
