/* link.c: transport lookup and the connector thread of a remote leg.
 *
 * Connecting may block (name resolution, TCP connect, handshake, login),
 * so it never runs on a site worker: each remote leg has a connector
 * thread that, when the worker asks for a connection, connects with a
 * deadline, checks the leg against the device (size, block size) and hands
 * the connection over; on failure it retries with exponential backoff
 * (200 ms doubling to 5 s, or to half the site's disconnect_timeout if
 * that is shorter).  A failure is logged when it differs from the
 * previous one, not on every attempt.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "link.h"
#include "rlink.h"
#include "report.h"
#include "units.h"

#define BACKOFF_MIN_MS   200u
#define BACKOFF_MAX_MS   5000u

const struct link_ops *
link_ops_for (enum cfg_transport t, const char **why)
{
  switch (t) {
  case TRANSPORT_NBD:
#ifdef HAVE_LIBNBD
    return &link_nbd_ops;
#else
    *why = "this build has no NBD support (configure found no libnbd)";
    return NULL;
#endif
  case TRANSPORT_ISCSI:
#ifdef HAVE_LIBISCSI
    return &link_iscsi_ops;
#else
    *why = "this build has no iSCSI support (configure found no libiscsi)";
    return NULL;
#endif
  case TRANSPORT_PATH:
    break;
  }
  *why = "not a network transport";
  return NULL;
}

/* Where the password sits in an iSCSI URL's user%password@ part:
 * [*start, *end) in addr, or false. */
static bool
iscsi_password_span (const char *addr, size_t *start, size_t *end)
{
  const char *auth, *at, *pct, *slash;

  if (strncmp (addr, "iscsi://", 8) != 0)
    return false;
  auth = addr + 8;
  if (!(at = strrchr (auth, '@')))
    return false;
  slash = strchr (auth, '/');
  pct = strchr (auth, '%');
  if (!pct || pct > at || (slash && slash < pct))
    return false;
  *start = (size_t) (pct + 1 - addr);
  *end = (size_t) (at - addr);
  return true;
}

void
link_redact (const char *addr, char *buf, size_t len)
{
  size_t a, b;
  if (!iscsi_password_span (addr, &a, &b) || addr[a] == '+')
    snprintf (buf, len, "%s", addr);
  else
    snprintf (buf, len, "%.*s***%s", (int) a, addr, addr + b);
}

const char *
link_secret_file (const char *addr, char *buf, size_t len)
{
  size_t a, b;
  if (!iscsi_password_span (addr, &a, &b) || addr[a] != '+')
    return NULL;
  snprintf (buf, len, "%.*s", (int) (b - a - 1), addr + a + 1);
  return buf;
}

bool
link_conn_error (int res)
{
  switch (-res) {
  case ENOTCONN: case ESHUTDOWN: case ECONNRESET: case ECONNREFUSED: case ECONNABORTED:
  case EPIPE: case ETIMEDOUT: case EHOSTUNREACH: case ENETUNREACH: case EBADF:
    return true;
  }
  return false;
}

/* Connect once; check the leg fits the device.  Conn or NULL + err. */
static void *connect_with (struct rlink *k, struct link_params p, uint64_t timeout_ms,
                           struct link_info *info, char *err, size_t errlen, bool *unsuitable,
                           bool checked);

void *
rlink_connect_once (struct rlink *k, uint64_t timeout_ms, struct link_info *info,
                    char *err, size_t errlen, bool *unsuitable)
{
  return connect_with (k, k->params, timeout_ms, info, err, errlen, unsuitable, true);
}

static void *
connect_with (struct rlink *k, struct link_params p, uint64_t timeout_ms,
              struct link_info *info, char *err, size_t errlen, bool *unsuitable, bool checked)
{
  void *c;

  *unsuitable = false;
  p.deadline_ns = mono_ns () + timeout_ms * 1000000u;
  memset (info, 0, sizeof *info);
  c = k->ops->connect (k->addr, &p, info, err, errlen);
  if (!c) {
    /* Library messages may end in newlines or span lines: one line. */
    char *q;
    for (q = err; *q; q++)
      if (*q == '\n' || *q == '\r')
        *q = ' ';
    while (q > err && q[-1] == ' ')
      *--q = 0;
    return NULL;
  }
  if (info->size < k->min_size) {
    snprintf (err, errlen, "the remote is smaller (%" PRIu64 " bytes) than the device (%" PRIu64
              " bytes)", info->size, k->min_size);
    *unsuitable = true;
    k->ops->close (c);
    return NULL;
  }
  if (info->block_size > k->max_block) {
    snprintf (err, errlen, "the remote's block size %u is larger than the device's %u",
              info->block_size, k->max_block);
    *unsuitable = true;
    k->ops->close (c);
    return NULL;
  }
  if (k->check && checked) {
    err[0] = 0;
    if (k->check (k->check_opaque, c, k->ops, info, err, errlen) != 0) {
      if (!err[0])
        snprintf (err, errlen, "refused by the leg check");
      *unsuitable = true;
      k->ops->close (c);
      return NULL;
    }
  }
  return c;
}

static void
wake (struct rlink *k)
{
  uint64_t one = 1;
  if (k->wake_fd >= 0 && write (k->wake_fd, &one, sizeof one) < 0) {
    /* eventfd full: the worker is awake anyway */
  }
}

static void *
connector_thread (void *arg)
{
  struct rlink *k = arg;
  unsigned backoff = BACKOFF_MIN_MS;

  pthread_mutex_lock (&k->lock);
  while (!k->stop) {
    struct link_info info;
    char err[256];
    void *c;

    if (!k->want || k->ready_conn) {
      pthread_cond_wait (&k->cv, &k->lock);
      continue;
    }
    pthread_mutex_unlock (&k->lock);
    bool unsuitable;
    err[0] = 0;
    c = rlink_connect_once (k, k->connect_timeout_ms, &info, err, sizeof err, &unsuitable);
    pthread_mutex_lock (&k->lock);
    k->attempts++;
    if (c) {
      k->ready_conn = c;
      k->ready_info = info;
      k->want = false;
      backoff = BACKOFF_MIN_MS;
      k->last_error[0] = 0;
      wake (k);
      continue;
    }
    rep_debugc (REP_DBG_LINK, "%s: connect to %s failed: %s; next try in %u ms", k->what, k->shown,
                err, (unsigned) backoff);
    if (strcmp (err, k->last_error) != 0) {
      if (unsuitable)
        rep_error ("%s: %s refused: %s; retrying in the background", k->what, k->shown, err);
      else
        rep_warn ("%s: cannot connect to %s: %s; retrying in the background", k->what, k->shown, err);
      snprintf (k->last_error, sizeof k->last_error, "%s", err);
    }
    {
      struct timespec ts = deadline_ts (wall_ns (), backoff);
      if (!k->stop)
        pthread_cond_timedwait (&k->cv, &k->lock, &ts);
    }
    backoff = backoff * 2 > k->backoff_max_ms ? k->backoff_max_ms : backoff * 2;
  }
  pthread_mutex_unlock (&k->lock);
  return NULL;
}

int
rlink_init (struct rlink *k, const struct link_ops *ops, const char *addr, const char *what)
{
  memset (k, 0, sizeof *k);
  k->ops = ops;
  k->addr = addr;
  link_redact (addr, k->shown, sizeof k->shown);
  snprintf (k->what, sizeof k->what, "%s", what);
  k->wake_fd = -1;
  k->backoff_max_ms = BACKOFF_MAX_MS;
  pthread_mutex_init (&k->lock, NULL);
  pthread_cond_init (&k->cv, NULL);
  k->inited = true;
  return 0;
}

int
rlink_start (struct rlink *k)
{
  int e = pthread_create (&k->thread, NULL, connector_thread, k);
  if (e) {
    errno = e;
    rep_error ("%s: cannot start the connector thread: %m", k->what);
    return -1;
  }
  k->thread_running = true;
  return 0;
}

void
rlink_want (struct rlink *k)
{
  pthread_mutex_lock (&k->lock);
  if (!k->want) {
    k->want = true;
    pthread_cond_signal (&k->cv);
  }
  pthread_mutex_unlock (&k->lock);
}

void *
rlink_take (struct rlink *k, struct link_info *info)
{
  void *c;
  pthread_mutex_lock (&k->lock);
  c = k->ready_conn;
  if (c) {
    *info = k->ready_info;
    k->ready_conn = NULL;
  }
  pthread_mutex_unlock (&k->lock);
  return c;
}

void
rlink_set_error (struct rlink *k, const char *fmt, ...)
{
  va_list ap;
  pthread_mutex_lock (&k->lock);
  va_start (ap, fmt);
  vsnprintf (k->last_error, sizeof k->last_error, fmt, ap);
  va_end (ap);
  pthread_mutex_unlock (&k->lock);
}

void
rlink_get_error (struct rlink *k, char *buf, size_t len)
{
  pthread_mutex_lock (&k->lock);
  snprintf (buf, len, "%s", k->last_error);
  pthread_mutex_unlock (&k->lock);
}

void
rlink_stop (struct rlink *k)
{
  if (!k->inited)
    return;
  pthread_mutex_lock (&k->lock);
  k->stop = true;
  pthread_cond_broadcast (&k->cv);
  pthread_mutex_unlock (&k->lock);
  if (k->thread_running) {
    pthread_join (k->thread, NULL);
    k->thread_running = false;
  }
  if (k->ready_conn) {
    k->ops->close (k->ready_conn);
    k->ready_conn = NULL;
  }
}

void
rlink_destroy (struct rlink *k)
{
  if (!k->inited)
    return;
  rlink_stop (k);
  if (k->conn) {
    k->ops->close (k->conn);
    k->conn = NULL;
  }
  pthread_mutex_destroy (&k->lock);
  pthread_cond_destroy (&k->cv);
  k->inited = false;
}

/* ---- readers: a connection of their own for synchronous reads ---------- */

void
rreader_init (struct rreader *rr, struct rlink *k)
{
  pthread_mutex_init (&rr->lock, NULL);
  rr->link = k;
  rr->conn = NULL;
}

/* Connect if needed; 0 or -errno (message in err). */
static int
rreader_connect (struct rreader *rr, char *err, size_t errlen)
{
  struct rlink *k = rr->link;
  struct link_params p = k->params;
  struct link_info info;
  bool unsuitable;

  if (rr->conn)
    return 0;
  /* Another session of the same iSCSI initiator: a different ISID, or the
   * target would reinstate it over the worker's session. */
  p.session_id ^= 0x00800000u;
  rr->conn = connect_with (k, p, k->connect_timeout_ms ? k->connect_timeout_ms : 5000,
                           &info, err, errlen, &unsuitable, false);
  return rr->conn ? 0 : -ENOTCONN;
}

/* A synchronous read or durable write through the reader's connection,
 * made on first use; a connection found gone is replaced once. */
static int
rreader_io (struct rreader *rr, bool write, void *buf, uint32_t len, uint64_t off, char *err,
            size_t errlen)
{
  struct rlink *k = rr->link;
  int r = -ENOTCONN, tries;

  if (!(write ? k->ops->pwrite_durable != NULL : k->ops->pread != NULL)) {
    snprintf (err, errlen, "the %s transport cannot %s", k->ops->name, write ? "write" : "read");
    return -EOPNOTSUPP;
  }
  pthread_mutex_lock (&rr->lock);
  for (tries = 0; tries < 2; tries++) {
    uint64_t deadline = mono_ns () +
      (uint64_t) (k->params.request_timeout_s ? k->params.request_timeout_s : 30) * 1000000000u;
    if ((r = rreader_connect (rr, err, errlen)) != 0)
      continue;
    r = write ? k->ops->pwrite_durable (rr->conn, buf, len, off, deadline)
      : k->ops->pread (rr->conn, buf, len, off, deadline);
    if (r == 0 || !link_conn_error (r))
      break;
    k->ops->close (rr->conn);           /* gone: one more try on a new connection */
    rr->conn = NULL;
  }
  if (r < 0 && !err[0])
    snprintf (err, errlen, "%s %u bytes at %" PRIu64 ": %s", write ? "writing" : "reading", len,
              off, strerror (-r));
  pthread_mutex_unlock (&rr->lock);
  return r;
}

int
rreader_pread (struct rreader *rr, void *buf, uint32_t len, uint64_t off, char *err, size_t errlen)
{
  return rreader_io (rr, false, buf, len, off, err, errlen);
}

int
rreader_pwrite_durable (struct rreader *rr, const void *buf, uint32_t len, uint64_t off,
                        char *err, size_t errlen)
{
  /* rreader_io does not write into buf when writing. */
  return rreader_io (rr, true, (void *) (uintptr_t) buf, len, off, err, errlen);
}

int
rreader_zero_end (struct rreader *rr, uint64_t off, uint32_t len, uint64_t *end)
{
  struct rlink *k = rr->link;
  char err[256] = "";
  int r;

  *end = off;
  if (!k->ops->zero_end)
    return 0;
  pthread_mutex_lock (&rr->lock);
  if ((r = rreader_connect (rr, err, sizeof err)) == 0) {
    uint64_t deadline = mono_ns () +
      (uint64_t) (k->params.request_timeout_s ? k->params.request_timeout_s : 30) * 1000000000u;
    r = k->ops->zero_end (rr->conn, off, len, deadline, end);
    if (r < 0 && link_conn_error (r)) {
      k->ops->close (rr->conn);
      rr->conn = NULL;
    }
  }
  pthread_mutex_unlock (&rr->lock);
  return r;
}

void
rreader_destroy (struct rreader *rr)
{
  if (!rr->link)
    return;
  if (rr->conn)
    rr->link->ops->close (rr->conn);
  rr->conn = NULL;
  pthread_mutex_destroy (&rr->lock);
  rr->link = NULL;
}
