/* journal-enc.c: the journal's batch encoder: entries in log order in, one
 * batch out (format in journal.h and nbd-replicator-replog(5), JOURNAL).
 *
 * Owns: the extents a batch will hold while it is built (an overlay.c
 * index: a treap, O(log n) an entry), and the batch buffer.  Coalescing:
 * every byte keeps only its last version within the batch (a later entry
 * wins over an earlier one, data or zeroes); the output is sorted by
 * device offset, adjacent extents of the same kind joined (up to
 * JNL_EXT_MAX each).
 * Invariants:
 *   - the index's seqs are the order of jnl_enc_add calls (1, 2, ...), so
 *     the last entry always wins, whatever log seqs the caller passes;
 *   - data_bytes and covered are the data bytes and all bytes the index
 *     covers now;
 *   - a data extent's src points at the caller's bytes (callers keep them
 *     until jnl_enc_finish);
 *   - jnl_enc_length is never below the length jnl_enc_finish produces.
 * May call: overlay.c, libc.  Nothing here does I/O.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "overlay.h"

struct jnl_enc {
  struct overlay *ov;          /* NULL until the first entry */
  uint64_t order;              /* the last entry's index seq */
  uint64_t first_seq, last_seq;
  uint64_t in_entries, in_bytes;
  uint64_t data_bytes, covered;
};

static uint64_t
align_up (uint64_t v, uint64_t a)
{
  return (v + a - 1) / a * a;
}

struct jnl_enc *
jnl_enc_new (void)
{
  return calloc (1, sizeof (struct jnl_enc));
}

void
jnl_enc_free (struct jnl_enc *e)
{
  if (e) {
    overlay_free (e->ov);
    free (e);
  }
}

void
jnl_enc_reset (struct jnl_enc *e)
{
  overlay_free (e->ov);
  memset (e, 0, sizeof *e);
}

/* What an insert over [off, end) replaces: bytes, data bytes. */
struct covered { uint64_t off, end, bytes, data; };

static void
count_covered (const struct ov_piece *p, void *opaque)
{
  struct covered *c = opaque;
  uint64_t s = p->start > c->off ? p->start : c->off;
  uint64_t t = p->end < c->end ? p->end : c->end;

  c->bytes += t - s;
  if (p->kind == OV_DATA)
    c->data += t - s;
}

int
jnl_enc_add (struct jnl_enc *e, uint64_t off, uint32_t len, const void *data, uint64_t seq)
{
  struct covered c = { off, off + len, 0, 0 };

  if (len == 0 || c.end < off)
    return -EINVAL;
  if (!e->ov && !(e->ov = overlay_new ()))
    return -ENOMEM;
  overlay_foreach (e->ov, off, c.end, count_covered, &c);
  if (overlay_insert (e->ov, off, c.end, e->order + 1, data ? OV_DATA : OV_ZERO, data) != 0)
    return -ENOMEM;
  e->order++;
  e->covered += len - c.bytes;
  e->data_bytes += (data ? len : 0) - c.data;
  if (e->in_entries == 0 || seq < e->first_seq)
    e->first_seq = seq;
  if (seq > e->last_seq)
    e->last_seq = seq;
  e->in_entries++;
  e->in_bytes += data ? len : 0;
  return 0;
}

static uint64_t
batch_len (uint64_t nentries, uint64_t data_bytes)
{
  uint64_t data_start = align_up (JNL_HDR_SIZE + nentries * sizeof (struct jnl_entry), JNL_BLOCK);

  return align_up (data_start + data_bytes, JNL_BLOCK);
}

/* At most one entry per extent, plus one per JNL_EXT_MAX bytes where runs
 * are split again. */
static uint64_t
max_entries (const struct jnl_enc *e)
{
  return (e->ov ? overlay_count (e->ov) : 0) + e->covered / JNL_EXT_MAX;
}

uint64_t
jnl_enc_length (const struct jnl_enc *e)
{
  return batch_len (max_entries (e), e->data_bytes);
}

/* Building the table: extents in order, adjacent ones of a kind joined. */
struct build {
  struct jnl_entry *tab;
  uint64_t n;
  uint8_t *d;                  /* where the next data bytes go */
};

static void
add_piece (const struct ov_piece *p, void *opaque)
{
  struct build *b = opaque;
  uint32_t flags = p->kind == OV_DATA ? JNL_DATA : JNL_ZERO;
  uint64_t pos = p->start;

  if (p->kind == OV_DATA) {
    memcpy (b->d, p->src + (p->start - p->eoff), p->end - p->start);
    b->d += p->end - p->start;
  }
  while (pos < p->end) {
    struct jnl_entry *prev = b->n ? &b->tab[b->n - 1] : NULL;
    uint64_t take = p->end - pos;
    if (prev && prev->flags == flags && prev->off + prev->len == pos && prev->len < JNL_EXT_MAX) {
      if (take > JNL_EXT_MAX - prev->len)
        take = JNL_EXT_MAX - prev->len;
      prev->len += (uint32_t) take;
    }
    else {
      if (take > JNL_EXT_MAX)
        take = JNL_EXT_MAX;
      b->tab[b->n++] = (struct jnl_entry) { pos, (uint32_t) take, flags };
    }
    pos += take;
  }
}

int
jnl_enc_finish (struct jnl_enc *e, const uint8_t group[16], const uint8_t device[16],
                void **buf, uint64_t *len, struct jnl_enc_stats *st)
{
  uint64_t max = max_entries (e), total;
  struct build b = { NULL, 0, NULL };
  struct jnl_batch_hdr *h;
  uint8_t *p, *data;

  /* the table first (its length places the data area), then the batch */
  if (!(b.tab = malloc ((max ? max : 1) * sizeof *b.tab)) ||
      !(data = malloc (e->data_bytes ? e->data_bytes : 1))) {
    free (b.tab);
    return -ENOMEM;
  }
  b.d = data;
  if (e->ov)
    overlay_foreach (e->ov, 0, UINT64_MAX, add_piece, &b);
  total = batch_len (b.n, e->data_bytes);
  if (posix_memalign ((void **) &p, JNL_BLOCK, total) != 0) {
    free (b.tab);
    free (data);
    return -ENOMEM;
  }
  memset (p, 0, total);
  memcpy (p + JNL_HDR_SIZE, b.tab, b.n * sizeof *b.tab);
  memcpy (p + align_up (JNL_HDR_SIZE + b.n * sizeof *b.tab, JNL_BLOCK), data, e->data_bytes);
  free (b.tab);
  free (data);
  h = (struct jnl_batch_hdr *) p;
  memcpy (h->magic, JNL_BATCH_MAGIC, 8);
  h->version = JNL_VERSION;
  h->hdr_size = JNL_HDR_SIZE;
  memcpy (h->group, group, 16);
  memcpy (h->device, device, 16);
  h->first_seq = e->first_seq;
  h->last_seq = e->last_seq;
  h->nentries = (uint32_t) b.n;
  h->data_bytes = e->data_bytes;
  h->total_len = total;
  h->raw_bytes = e->in_bytes;
  if (st)
    *st = (struct jnl_enc_stats) { e->in_entries, e->in_bytes, b.n, e->data_bytes, total };
  *buf = p;
  *len = total;
  return 0;
}
