/* link-nbd.c: NBD remote legs through libnbd's asynchronous API.
 *
 * libnbd has no timeouts and never reconnects: the worker keeps deadlines
 * and calls abort() (shutdown of the socket), after which requests in
 * flight complete with ENOTCONN and the handle is dead.  A trim is sent as
 * a write-zeroes that may punch holes, so it reads back zeroes on every
 * server (safety rule 10).
 *
 * Its functions have the shape of link-iscsi.c's, one for one (connect,
 * close, submit, notify, ...): both fill struct link_ops (link.h).  The
 * likeness is the interface; what each body calls is its library's.
 */
#include <config.h>

#ifdef HAVE_LIBNBD

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libnbd.h>

#include "link.h"
#include "units.h"

struct nbd_link {
  struct nbd_handle *h;
  bool can_zero, can_flush, can_fua;
  bool can_status;               /* base:allocation block status */
};

struct nbd_req {
  link_done_fn fn;
  void *opaque;
  int res;                       /* bytes on success */
};

static int
nbd_req_done (void *user_data, int *error)
{
  struct nbd_req *q = user_data;
  q->fn (q->opaque, *error ? -*error : q->res);
  return 1;                      /* retire the command */
}

static void
nbd_req_free (void *user_data)
{
  free (user_data);
}

static bool
gone (struct nbd_handle *h)
{
  return nbd_aio_is_dead (h) || nbd_aio_is_closed (h);
}

static int
dir_events (struct nbd_handle *h)
{
  unsigned dir = nbd_aio_get_direction (h);
  int ev = 0;
  if (dir & LIBNBD_AIO_DIRECTION_READ)
    ev |= POLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    ev |= POLLOUT;
  return ev;
}

/* Drive the handle with poll() until pred or the deadline (connect only:
 * this runs on the connector thread). */
static int
run_until_ready (struct nbd_handle *h, uint64_t deadline_ns)
{
  while (!nbd_aio_is_ready (h)) {
    struct pollfd pfd;
    uint64_t now = mono_ns ();
    int ms, r;
    if (gone (h))
      return -1;
    if (now >= deadline_ns) {
      errno = ETIMEDOUT;
      return -2;
    }
    ms = (int) ((deadline_ns - now) / 1000000u) + 1;
    pfd.fd = nbd_aio_get_fd (h);
    pfd.events = (short) dir_events (h);
    pfd.revents = 0;
    r = poll (&pfd, 1, ms > 100 ? 100 : ms);
    if (r < 0 && errno != EINTR)
      return -1;
    if (r <= 0)
      continue;
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
      nbd_aio_notify_read (h);
    else if (pfd.revents & POLLOUT)
      nbd_aio_notify_write (h);
  }
  return 0;
}

static void *
nbdl_connect (const char *addr, const struct link_params *p, struct link_info *info,
              char *err, size_t errlen)
{
  struct nbd_link *c = calloc (1, sizeof *c);
  int64_t size, bs;
  int r;

  if (!c || !(c->h = nbd_create ())) {
    snprintf (err, errlen, "nbd_create: %s", nbd_get_error () ? nbd_get_error () : strerror (errno));
    free (c);
    return NULL;
  }
  nbd_set_handle_name (c->h, "replicator");
  /* The URI comes from the administrator's configuration: let it name
   * TLS certificate and PSK files (tls-certificates=, tls-psk-file=). */
  nbd_set_uri_allow_local_file (c->h, true);
  nbd_add_meta_context (c->h, LIBNBD_CONTEXT_BASE_ALLOCATION);   /* sparse resync sources */
  nbd_set_full_info (c->h, true);      /* the export description: a receiver? */
  if (nbd_aio_connect_uri (c->h, addr) == -1) {
    snprintf (err, errlen, "%s", nbd_get_error ());
    goto fail;
  }
  r = run_until_ready (c->h, p->deadline_ns);
  if (r == -2) {
    snprintf (err, errlen, "no NBD handshake within the connect timeout");
    goto fail;
  }
  if (r < 0) {
    const char *e = nbd_get_error ();
    snprintf (err, errlen, "%s", e && *e ? e : "connection closed during the handshake");
    goto fail;
  }
  if ((size = nbd_get_size (c->h)) < 0) {
    snprintf (err, errlen, "cannot get the export size: %s", nbd_get_error ());
    goto fail;
  }
  if (nbd_is_read_only (c->h) == 1) {
    snprintf (err, errlen, "the export is read-only");
    goto fail;
  }
  bs = nbd_get_block_size (c->h, LIBNBD_SIZE_MINIMUM);
  c->can_zero = nbd_can_zero (c->h) == 1;
  c->can_flush = nbd_can_flush (c->h) == 1;
  c->can_fua = nbd_can_fua (c->h) == 1;
  c->can_status = nbd_can_meta_context (c->h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  info->size = (uint64_t) size;
  info->block_size = bs > 0 ? (uint32_t) bs : 512;
  info->can_zero = c->can_zero;
  info->can_flush = c->can_flush;
  info->can_fua = c->can_fua;
  info->receiver = false;
  {
    char *desc = nbd_get_export_description (c->h);
    if (desc && !strncmp (desc, LINK_RECEIVER_DESCRIPTION, strlen (LINK_RECEIVER_DESCRIPTION)))
      info->receiver = true;
    free (desc);
  }
  return c;
 fail:
  nbd_close (c->h);
  free (c);
  return NULL;
}

static void
nbdl_close (void *v)
{
  struct nbd_link *c = v;
  if (!c)
    return;
  if (!gone (c->h) && nbd_aio_in_flight (c->h) == 0)
    nbd_aio_disconnect (c->h, 0);
  nbd_close (c->h);
  free (c);
}

static int
nbdl_submit (void *v, int op, const void *buf, uint64_t off, uint32_t len, int flags,
             link_done_fn fn, void *opaque)
{
  struct nbd_link *c = v;
  struct nbd_req *q;
  nbd_completion_callback cb;
  int64_t r;
  uint32_t f = 0;

  if (gone (c->h))
    return -ENOTCONN;
  if (op == LREQ_ZERO && !c->can_zero)
    return -EOPNOTSUPP;          /* the worker writes zeroes instead */
  if (op == LREQ_FLUSH && !c->can_flush) {
    fn (opaque, 0);              /* nothing to flush: writes are stable */
    return 0;
  }
  if (!(q = malloc (sizeof *q)))
    return -ENOMEM;
  q->fn = fn;
  q->opaque = opaque;
  q->res = op == LREQ_FLUSH ? 0 : (int) len;
  cb.callback = nbd_req_done;
  cb.user_data = q;
  cb.free = nbd_req_free;
  if ((flags & LREQ_FUA) && c->can_fua)
    f |= LIBNBD_CMD_FLAG_FUA;
  switch (op) {
  case LREQ_WRITE:
    r = nbd_aio_pwrite (c->h, buf, len, off, cb, f);
    break;
  case LREQ_ZERO:
    if (!(flags & LREQ_MAY_TRIM))
      f |= LIBNBD_CMD_FLAG_NO_HOLE;
    r = nbd_aio_zero (c->h, len, off, cb, f);
    break;
  default:
    r = nbd_aio_flush (c->h, cb, 0);
    break;
  }
  if (r == -1) {
    int e = nbd_get_errno ();
    /* libnbd called the free callback already. */
    return gone (c->h) ? -ENOTCONN : -(e ? e : EIO);
  }
  return 0;
}

static int
nbdl_events (void *v, int *fd)
{
  struct nbd_link *c = v;
  if (gone (c->h))
    return 0;
  *fd = nbd_aio_get_fd (c->h);
  return dir_events (c->h);
}

/* Data (or EOF, or an error) waits on the socket.  libnbd must only be
 * told "readable" when it is: in the READY state a read notification moves
 * it to REPLY.START, and if the read there finds nothing it stays in that
 * state, where commands queued meanwhile are not sent until a reply comes.
 * With nothing in flight none ever comes.  io_uring poll results can say
 * POLLIN when nothing is there (seen under load: the mask is the wake-up's,
 * not the socket's state when we look), so look first. */
static bool
readable (int fd)
{
  char b;
  ssize_t r = recv (fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

#define NOTIFY_MAX_READS 256     /* replies taken per wake-up, at most */

static int
nbdl_notify (void *v, int revents)
{
  struct nbd_link *c = v;
  int fd = nbd_aio_get_fd (c->h), n;

  /* libnbd reads one reply per notification and then waits in READY:
   * take every reply already on the socket now rather than one per poll
   * round trip. */
  for (n = 0; n < NOTIFY_MAX_READS && fd >= 0; n++) {
    if (!(nbd_aio_get_direction (c->h) & LIBNBD_AIO_DIRECTION_READ) || !readable (fd))
      break;
    if (nbd_aio_notify_read (c->h) == -1 || gone (c->h))
      return -1;
  }
  if ((revents & POLLOUT) && !gone (c->h) &&
      (nbd_aio_get_direction (c->h) & LIBNBD_AIO_DIRECTION_WRITE))
    nbd_aio_notify_write (c->h);
  return gone (c->h) ? -1 : 0;
}

static int
nbdl_tick (void *v)
{
  struct nbd_link *c = v;
  return gone (c->h) ? -1 : 0;
}

static void
nbdl_abort (void *v)
{
  struct nbd_link *c = v;
  int fd;
  if (gone (c->h))
    return;
  fd = nbd_aio_get_fd (c->h);
  if (fd >= 0)
    shutdown (fd, SHUT_RDWR);
  /* Let libnbd see the EOF: requests in flight complete with ENOTCONN. */
  nbd_aio_notify_read (c->h);
}

/* Drive the connection (one of its own, not the worker's) until the
 * command `cookie` completes or the deadline: 0 or -errno. */
static int
wait_cookie (struct nbd_link *c, int64_t cookie, uint64_t deadline_ns)
{
  if (cookie == -1)
    return gone (c->h) ? -ENOTCONN : -(nbd_get_errno () ? nbd_get_errno () : EIO);
  for (;;) {
    struct pollfd pfd;
    uint64_t now = mono_ns ();
    int r = nbd_aio_command_completed (c->h, cookie);
    if (r == 1)
      return 0;
    if (r == -1)
      return gone (c->h) ? -ENOTCONN : -(nbd_get_errno () ? nbd_get_errno () : EIO);
    if (now >= deadline_ns) {
      nbdl_abort (c);                    /* the connection is unusable now */
      return -ETIMEDOUT;
    }
    pfd.fd = nbd_aio_get_fd (c->h);
    pfd.events = (short) dir_events (c->h);
    pfd.revents = 0;
    r = poll (&pfd, 1, 100);
    if (r < 0 && errno != EINTR)
      return -errno;
    if (r > 0 && nbdl_notify (c, pfd.revents) == -1)
      return -ENOTCONN;
  }
}

static int
nbdl_pread (void *v, void *buf, uint32_t len, uint64_t off, uint64_t deadline_ns)
{
  struct nbd_link *c = v;
  if (gone (c->h))
    return -ENOTCONN;
  return wait_cookie (c, nbd_aio_pread (c->h, buf, len, off, NBD_NULL_COMPLETION, 0), deadline_ns);
}

/* A CACHE request, answered (a receiver's stream fence).  Connection of
 * its own, as pread. */
static int
nbdl_fence (void *v, uint64_t off, uint32_t len, uint64_t deadline_ns)
{
  struct nbd_link *c = v;
  if (gone (c->h))
    return -ENOTCONN;
  if (nbd_can_cache (c->h) != 1)
    return -EOPNOTSUPP;
  return wait_cookie (c, nbd_aio_cache (c->h, len, off, NBD_NULL_COMPLETION, 0), deadline_ns);
}

/* Write len bytes at off and make them durable: a write with FUA when the
 * server takes FUA, else a write then a flush; a server that can neither
 * gets the write alone (it says its writes need no flush).  Connection of
 * its own, as pread. */
static int
nbdl_pwrite_durable (void *v, const void *buf, uint32_t len, uint64_t off,
                     uint64_t deadline_ns)
{
  struct nbd_link *c = v;
  int r;

  if (gone (c->h))
    return -ENOTCONN;
  r = wait_cookie (c, nbd_aio_pwrite (c->h, buf, len, off, NBD_NULL_COMPLETION,
                                      c->can_fua ? LIBNBD_CMD_FLAG_FUA : 0), deadline_ns);
  if (r == 0 && !c->can_fua && c->can_flush)
    r = wait_cookie (c, nbd_aio_flush (c->h, NBD_NULL_COMPLETION, 0), deadline_ns);
  return r;
}

struct zero_run {
  uint64_t from, end;            /* reads as zeroes in [from, end) */
  bool broken;
};

static int
extent_cb (void *user_data, const char *ctx, uint64_t offset, uint32_t *entries,
           size_t n, int *error)
{
  struct zero_run *z = user_data;
  size_t i;
  (void) error;
  if (strcmp (ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || offset != z->from)
    return 0;
  for (i = 0; i + 1 < n && !z->broken; i += 2) {
    if (!(entries[i + 1] & LIBNBD_STATE_ZERO))
      z->broken = true;
    else
      z->end += entries[i];
  }
  return 0;
}

/* How far from off [off, off + len) reads as zeroes (off: not at all). */
static int
nbdl_zero_end (void *v, uint64_t off, uint32_t len, uint64_t deadline_ns, uint64_t *end)
{
  struct nbd_link *c = v;
  struct zero_run z = { .from = off, .end = off };
  nbd_extent_callback cb = { .callback = extent_cb, .user_data = &z };
  int r;

  *end = off;
  if (gone (c->h))
    return -ENOTCONN;
  if (!c->can_status)
    return 0;                            /* no information: data */
  r = wait_cookie (c, nbd_aio_block_status (c->h, len, off, cb, NBD_NULL_COMPLETION, 0), deadline_ns);
  if (r == 0)
    *end = z.end < off + len ? z.end : off + len;
  return r;
}

const struct link_ops link_nbd_ops = {
  .name = "nbd",
  .connect = nbdl_connect,
  .close = nbdl_close,
  .submit = nbdl_submit,
  .events = nbdl_events,
  .notify = nbdl_notify,
  .tick = nbdl_tick,
  .abort = nbdl_abort,
  .pread = nbdl_pread,
  .pwrite_durable = nbdl_pwrite_durable,
  .zero_end = nbdl_zero_end,
  .fence = nbdl_fence,
};

#endif /* HAVE_LIBNBD */
