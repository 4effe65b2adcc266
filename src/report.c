/* report.c: see report.h.  The only place that decides where text goes. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "report.h"

static struct report_sink sink;
static int verbose;
unsigned rep_debug_mask;

void
report_set_debug_mask (unsigned mask)
{
  __atomic_store_n (&rep_debug_mask, mask, __ATOMIC_RELAXED);
}

void
report_set_sink (const struct report_sink *s)
{
  if (s)
    sink = *s;
  else
    memset (&sink, 0, sizeof sink);
}

void
report_set_verbose (int v)
{
  verbose = v;
}

static void
emit (void (*fn) (const char *, va_list), int always, const char *prefix,
      const char *fmt, va_list ap)
{
  int saved = errno;

  if (fn) {
    fn (fmt, ap);
  }
  else if (always || verbose) {
    char buf[1024];
    errno = saved;             /* vsnprintf's %m reads errno */
    vsnprintf (buf, sizeof buf, fmt, ap);
    fprintf (stderr, "%s%s\n", prefix, buf);
  }
  errno = saved;
}

/* rep_error, rep_info and rep_debug are alike on purpose: C cannot pass
 * "..." on, so each level has its own three-line wrapper around emit. */
void
rep_error (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  emit (sink.error, 1, "error: ", fmt, ap);
  va_end (ap);
}

/* nbdkit has no warning level: a warning is an error-level line that does
 * not fail the call, prefixed so operators can tell them apart. */
void
rep_warn (const char *fmt, ...)
{
  va_list ap;
  char buf[1024];
  int saved = errno;

  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  errno = saved;
  if (sink.error) {
    char line[1100];
    snprintf (line, sizeof line, "warning: %s", buf);
    rep_error ("%s", line);
  }
  else
    fprintf (stderr, "warning: %s\n", buf);
  errno = saved;
}

/* Information the operator should see once (recovery counts, start-up). */
void
rep_info (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  emit (sink.info, 1, "", fmt, ap);
  va_end (ap);
}

void
rep_debug (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  emit (sink.debug, 0, "debug: ", fmt, ap);
  va_end (ap);
}

void
rep_fmt (char *buf, size_t len, const char *fmt, ...)
{
  va_list ap;

  if (!buf || len == 0)
    return;
  va_start (ap, fmt);
  vsnprintf (buf, len, fmt, ap);
  va_end (ap);
}
