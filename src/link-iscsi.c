/* link-iscsi.c: iSCSI remote legs through libiscsi's asynchronous API.
 *
 * Settings: libiscsi's own auto-reconnect is off
 * (it stalls for seconds and ignores timeouts while reconnecting); the
 * worker reconnects with a new context.  Every connection of one leg logs
 * in with the same initiator name and ISID, so the target reinstates the
 * session and ends the old one.  That is no fence: a target cannot recall a
 * write its backing store is already running (tgtd closes the old
 * connection and serves the new session at once; its backing-store thread
 * finishes the old write later, after newer ones: tests/test-in-doubt.sh),
 * so the writes of a dropped connection are in doubt as over NBD (safety
 * rule 5).  Unit attentions after a reconnect are suppressed.
 * Write-zeroes is a WRITE SAME(16) of a zero block (no unmap); a target
 * that refuses it gets plain writes of zeroes from the worker from then on.
 *
 * Its functions have the shape of link-nbd.c's, one for one: both fill
 * struct link_ops (link.h); the bodies differ by library.
 */
#include <config.h>

#ifdef HAVE_LIBISCSI

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "link.h"
#include "units.h"

#define INITIATOR_NAME "iqn.2026-11.org.nbd-replicator:initiator"
#define ZERO_MAX       (16u << 20)     /* bytes per WRITE SAME, at most */

struct iscsi_link {
  struct iscsi_context *iscsi;
  int lun;
  uint32_t block_size;
  bool dead;
  unsigned char *zero_block;     /* WRITE SAME's pattern */
  bool lbprz;                    /* deallocated blocks read as zeroes */
  bool no_lba_status;            /* the target refused GET LBA STATUS */
  bool no_fua;                   /* the target refused WRITE(16) with FUA */
};

struct iscsi_req {
  link_done_fn fn;
  void *opaque;
  int res;
};

/* Connect-time completion. */
struct wait_op {
  bool done;
  int status;
  struct scsi_task *task;
};

static void
wait_cb (struct iscsi_context *iscsi, int status, void *data, void *priv)
{
  struct wait_op *w = priv;
  (void) iscsi;
  w->done = true;
  w->status = status;
  w->task = data;
}

/* Drive the context with poll() until op is done (connector thread only). */
static int
wait_for (struct iscsi_context *iscsi, struct wait_op *op, uint64_t deadline_ns)
{
  while (!op->done) {
    struct pollfd pfd;
    uint64_t now = mono_ns ();
    int r;
    if (now >= deadline_ns)
      return -2;
    pfd.fd = iscsi_get_fd (iscsi);
    pfd.events = (short) iscsi_which_events (iscsi);
    pfd.revents = 0;
    if (pfd.events == 0) {
      usleep (100000);
      if (iscsi_service (iscsi, 0) < 0)
        return -1;
      continue;
    }
    r = poll (&pfd, 1, 100);
    if (r < 0 && errno != EINTR)
      return -1;
    if (iscsi_service (iscsi, r > 0 ? pfd.revents : 0) < 0)
      return -1;
  }
  return 0;
}

/* The CHAP password of the URL, or with "+FILE" the first line of FILE
 * (nbdkit's password=+FILE convention: no secret on a command line). */
static int
chap_password (const char *spec, char *pw, size_t len, char *err, size_t errlen)
{
  FILE *f;
  size_t n;

  if (spec[0] != '+') {
    snprintf (pw, len, "%s", spec);
    return 0;
  }
  if (!(f = fopen (spec + 1, "re"))) {
    snprintf (err, errlen, "CHAP password file %s: %s", spec + 1, strerror (errno));
    return -1;
  }
  if (!fgets (pw, (int) len, f))
    pw[0] = 0;
  fclose (f);
  n = strlen (pw);
  while (n && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
    pw[--n] = 0;
  return 0;
}

static void *
iscsil_connect (const char *addr, const struct link_params *p, struct link_info *info,
                char *err, size_t errlen)
{
  struct iscsi_link *c = calloc (1, sizeof *c);
  struct iscsi_url *url = NULL;
  struct wait_op op = { 0 };
  struct scsi_readcapacity16 *cap;
  int r;

  if (!c || !(c->iscsi = iscsi_create_context (INITIATOR_NAME))) {
    snprintf (err, errlen, "cannot create an iSCSI context");
    free (c);
    return NULL;
  }
  if (!(url = iscsi_parse_full_url (c->iscsi, addr))) {
    snprintf (err, errlen, "bad iSCSI URL: %s", iscsi_get_error (c->iscsi));
    goto fail;
  }
  c->lun = url->lun;
  iscsi_set_targetname (c->iscsi, url->target);
  iscsi_set_session_type (c->iscsi, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest (c->iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
  iscsi_set_isid_random (c->iscsi, p->session_id & 0xffffff, (p->session_id >> 24) & 0xff);
  iscsi_set_noautoreconnect (c->iscsi, 1);
  iscsi_set_no_ua_on_reconnect (c->iscsi, 1);
  if (p->request_timeout_s)
    iscsi_set_timeout (c->iscsi, (int) p->request_timeout_s);
  if (url->user[0]) {
    char pw[256];
    if (chap_password (url->passwd, pw, sizeof pw, err, errlen) == -1)
      goto fail;
    r = iscsi_set_initiator_username_pwd (c->iscsi, url->user, pw);
    memset (pw, 0, sizeof pw);
    if (r != 0) {
      snprintf (err, errlen, "CHAP: %s", iscsi_get_error (c->iscsi));
      goto fail;
    }
  }
  if (iscsi_full_connect_async (c->iscsi, url->portal, c->lun, wait_cb, &op) != 0) {
    snprintf (err, errlen, "%s", iscsi_get_error (c->iscsi));
    goto fail;
  }
  r = wait_for (c->iscsi, &op, p->deadline_ns);
  if (r == -2) {
    snprintf (err, errlen, "no iSCSI login within the connect timeout");
    goto fail;
  }
  if (r < 0 || op.status != SCSI_STATUS_GOOD) {
    snprintf (err, errlen, "no session (target unreachable, or it refused the login): %s",
              iscsi_get_error (c->iscsi));
    goto fail;
  }
  memset (&op, 0, sizeof op);
  if (!iscsi_readcapacity16_task (c->iscsi, c->lun, wait_cb, &op) ||
      wait_for (c->iscsi, &op, p->deadline_ns) != 0 || op.status != SCSI_STATUS_GOOD ||
      !(cap = scsi_datain_unmarshall (op.task))) {
    snprintf (err, errlen, "READ CAPACITY failed: %s", iscsi_get_error (c->iscsi));
    if (op.task)
      scsi_free_scsi_task (op.task);
    goto fail;
  }
  c->block_size = cap->block_length;
  c->lbprz = cap->lbprz != 0;
  info->size = (cap->returned_lba + 1) * (uint64_t) cap->block_length;
  scsi_free_scsi_task (op.task);
  info->block_size = c->block_size;
  c->zero_block = calloc (1, c->block_size);
  info->can_zero = c->zero_block != NULL;
  info->can_flush = true;
  info->can_fua = true;
  iscsi_destroy_url (url);
  return c;
 fail:
  if (url)
    iscsi_destroy_url (url);
  iscsi_destroy_context (c->iscsi);
  free (c);
  return NULL;
}

static void
iscsil_close (void *v)
{
  struct iscsi_link *c = v;
  if (!c)
    return;
  /* Destroying the context completes queued tasks (CANCELLED). */
  iscsi_destroy_context (c->iscsi);
  free (c->zero_block);
  free (c);
}

static void
req_cb (struct iscsi_context *iscsi, int status, void *data, void *priv)
{
  struct iscsi_req *q = priv;
  struct scsi_task *task = data;
  int res;
  (void) iscsi;

  switch (status) {
  case SCSI_STATUS_GOOD: res = q->res; break;
  case SCSI_STATUS_CANCELLED: res = -ENOTCONN; break;
  case SCSI_STATUS_TIMEOUT: res = -ETIMEDOUT; break;
  case SCSI_STATUS_CHECK_CONDITION:
    res = task && task->sense.key == SCSI_SENSE_ILLEGAL_REQUEST ? -EINVAL : -EIO;
    break;
  default: res = -EIO; break;
  }
  if (task)
    scsi_free_scsi_task (task);
  q->fn (q->opaque, res);
  free (q);
}

static int
iscsil_submit (void *v, int op, const void *buf, uint64_t off, uint32_t len, int flags,
               link_done_fn fn, void *opaque)
{
  struct iscsi_link *c = v;
  struct iscsi_req *q;
  struct scsi_task *t;

  if (c->dead)
    return -ENOTCONN;
  if (op == LREQ_ZERO && (off % c->block_size || len % c->block_size || !c->zero_block))
    return -EOPNOTSUPP;                  /* the worker writes zeroes instead */
  if (op == LREQ_WRITE && (off % c->block_size || len % c->block_size))
    return -EINVAL;
  if (!(q = malloc (sizeof *q)))
    return -ENOMEM;
  if (op == LREQ_ZERO && len > ZERO_MAX)
    len = ZERO_MAX;                      /* the worker sends the rest next */
  q->fn = fn;
  q->opaque = opaque;
  q->res = op == LREQ_FLUSH ? 0 : (int) len;
  if (op == LREQ_WRITE)
    t = iscsi_write16_task (c->iscsi, c->lun, off / c->block_size, (unsigned char *) buf, len,
                            (int) c->block_size, 0, 0, (flags & LREQ_FUA) != 0, 0, 0, req_cb, q);
  else if (op == LREQ_ZERO)
    /* WRITE SAME of a zero block: the target writes the zeroes (no unmap:
     * they must read back as zeroes on any target).  A target that
     * refuses it fails the task: the worker then writes zeroes. */
    t = iscsi_writesame16_task (c->iscsi, c->lun, off / c->block_size, c->zero_block,
                                c->block_size, len / c->block_size, 0, 0, 0, 0, req_cb, q);
  else
    t = iscsi_synchronizecache16_task (c->iscsi, c->lun, 0, 0, 0, 0, req_cb, q);
  if (!t) {
    free (q);
    return -ENOTCONN;
  }
  return 0;
}

static int
iscsil_events (void *v, int *fd)
{
  struct iscsi_link *c = v;
  if (c->dead)
    return 0;
  *fd = iscsi_get_fd (c->iscsi);
  return iscsi_which_events (c->iscsi);
}

static int
iscsil_notify (void *v, int revents)
{
  struct iscsi_link *c = v;
  if (!c->dead && iscsi_service (c->iscsi, revents) < 0)
    c->dead = true;
  return c->dead ? -1 : 0;
}

static int
iscsil_tick (void *v)
{
  return iscsil_notify (v, 0);   /* timeouts are checked in service */
}

static void
iscsil_abort (void *v)
{
  struct iscsi_link *c = v;
  c->dead = true;                /* close() cancels what is queued */
}

/* Run task t (its callback wait_cb with op) to its end on a connection of
 * its own, waiting at most until deadline_ns: 0 with the status and task
 * in op, or -ETIMEDOUT / -ENOTCONN with the connection dead.  A task given
 * up on is cancelled here: its callback points at op, which must not be
 * written after we return (close() would complete it otherwise). */
static int
sync_task (struct iscsi_link *c, struct scsi_task *t, struct wait_op *op, uint64_t deadline_ns)
{
  int r;

  if (!t)
    return -ENOTCONN;
  if ((r = wait_for (c->iscsi, op, deadline_ns)) == 0)
    return 0;
  c->dead = true;
  if (!op->done)
    iscsi_scsi_cancel_task (c->iscsi, t);
  if (op->task)
    scsi_free_scsi_task (op->task);
  op->task = NULL;
  return r == -2 ? -ETIMEDOUT : -ENOTCONN;
}

/* A finished task's result as 0 or -errno; frees the task. */
static int
task_result (struct wait_op *op)
{
  int r;
  switch (op->status) {
  case SCSI_STATUS_GOOD: r = 0; break;
  case SCSI_STATUS_CANCELLED: r = -ENOTCONN; break;
  case SCSI_STATUS_TIMEOUT: r = -ETIMEDOUT; break;
  case SCSI_STATUS_CHECK_CONDITION:
    r = op->task && op->task->sense.key == SCSI_SENSE_ILLEGAL_REQUEST ? -EINVAL : -EIO;
    break;
  default: r = -EIO; break;
  }
  if (op->task)
    scsi_free_scsi_task (op->task);
  op->task = NULL;
  return r;
}

/* A synchronous read on a connection of its own (not the worker's). */
static int
iscsil_pread (void *v, void *buf, uint32_t len, uint64_t off, uint64_t deadline_ns)
{
  struct iscsi_link *c = v;
  struct wait_op op = { 0 };
  int r;

  if (c->dead)
    return -ENOTCONN;
  if (off % c->block_size || len % c->block_size)
    return -EINVAL;
  r = sync_task (c, iscsi_read16_task (c->iscsi, c->lun, off / c->block_size, len,
                                       (int) c->block_size, 0, 0, 0, 0, 0, wait_cb, &op),
                 &op, deadline_ns);
  if (r < 0)
    return r;
  if (op.status != SCSI_STATUS_GOOD || !op.task || op.task->datain.size < (int) len) {
    r = op.status == SCSI_STATUS_CANCELLED ? -ENOTCONN : -EIO;
    if (op.task)
      scsi_free_scsi_task (op.task);
    return r;
  }
  memcpy (buf, op.task->datain.data, len);
  scsi_free_scsi_task (op.task);
  return 0;
}

/* Write len bytes at off and make them durable: WRITE(16) with FUA; a
 * target that refuses FUA (ILLEGAL REQUEST) gets WRITE(16) then
 * SYNCHRONIZE CACHE(16) from then on.  Connection of its own, as pread. */
static int
iscsil_pwrite_durable (void *v, const void *buf, uint32_t len, uint64_t off,
                       uint64_t deadline_ns)
{
  struct iscsi_link *c = v;
  struct wait_op op = { 0 };
  uint64_t lba;
  int r;

  if (c->dead)
    return -ENOTCONN;
  if (off % c->block_size || len % c->block_size)
    return -EINVAL;
  lba = off / c->block_size;
  if (!c->no_fua) {
    r = sync_task (c, iscsi_write16_task (c->iscsi, c->lun, lba, (unsigned char *) buf, len,
                                          (int) c->block_size, 0, 0, 1, 0, 0, wait_cb, &op),
                   &op, deadline_ns);
    if (r < 0 || (r = task_result (&op)) != -EINVAL)
      return r;
    c->no_fua = true;                    /* refused: write, then synchronize */
    memset (&op, 0, sizeof op);
  }
  r = sync_task (c, iscsi_write16_task (c->iscsi, c->lun, lba, (unsigned char *) buf, len,
                                        (int) c->block_size, 0, 0, 0, 0, 0, wait_cb, &op),
                 &op, deadline_ns);
  if (r < 0 || (r = task_result (&op)) < 0)
    return r;
  memset (&op, 0, sizeof op);
  r = sync_task (c, iscsi_synchronizecache16_task (c->iscsi, c->lun, 0, 0, 0, 0, wait_cb, &op),
                 &op, deadline_ns);
  return r < 0 ? r : task_result (&op);
}

/* GET LBA STATUS: how far from off the LUN is deallocated, on a target
 * whose deallocated blocks read as zeroes (LBPRZ).  Connection of its own. */
static int
iscsil_zero_end (void *v, uint64_t off, uint32_t len, uint64_t deadline_ns, uint64_t *end)
{
  struct iscsi_link *c = v;
  struct wait_op op = { 0 };
  struct scsi_get_lba_status *st;
  uint64_t lba = off / c->block_size, e = off;
  uint32_t i;
  int r;

  *end = off;
  if (c->dead)
    return -ENOTCONN;
  if (!c->lbprz || c->no_lba_status || off % c->block_size)
    return 0;                            /* no information: data */
  r = sync_task (c, iscsi_get_lba_status_task (c->iscsi, c->lun, lba, 4096, wait_cb, &op),
                 &op, deadline_ns);
  if (r < 0)
    return r;
  if (op.status != SCSI_STATUS_GOOD || !(st = scsi_datain_unmarshall (op.task))) {
    if (op.status == SCSI_STATUS_CHECK_CONDITION)
      c->no_lba_status = true;           /* not supported: do not ask again */
    if (op.task)
      scsi_free_scsi_task (op.task);
    return 0;
  }
  /* Descriptors in order from lba: deallocated runs count as zeroes. */
  for (i = 0; i < st->num_descriptors; i++) {
    const struct scsi_lba_status_descriptor *d = &st->descriptors[i];
    if (d->lba * c->block_size != e || d->provisioning != SCSI_PROVISIONING_TYPE_DEALLOCATED)
      break;
    e += (uint64_t) d->num_blocks * c->block_size;
    if (e >= off + len)
      break;
  }
  scsi_free_scsi_task (op.task);
  *end = e < off + len ? e : off + len;
  return 0;
}

const struct link_ops link_iscsi_ops = {
  .name = "iscsi",
  .fenced = false,               /* reinstatement does not stop a write under way */
  .connect = iscsil_connect,
  .close = iscsil_close,
  .submit = iscsil_submit,
  .events = iscsil_events,
  .notify = iscsil_notify,
  .tick = iscsil_tick,
  .abort = iscsil_abort,
  .pread = iscsil_pread,
  .pwrite_durable = iscsil_pwrite_durable,
  .zero_end = iscsil_zero_end,
};

#endif /* HAVE_LIBISCSI */
