/* journal-enc.c: the journal's batch encoder: entries in log order in, one
 * batch out (format in journal.h and nbd-replicator-replog(5), JOURNAL).
 *
 * Owns: the set of extents a batch will hold while it is built, and the
 * batch buffer.  Coalescing: every byte keeps only its last version within
 * the batch (a later entry wins over an earlier one, data or zeroes); the
 * output is sorted by device offset, adjacent extents of the same kind
 * joined (up to JNL_EXT_MAX each).
 * Invariants:
 *   - e->ext is sorted by offset and no two extents overlap;
 *   - a data extent's src points at the caller's bytes for exactly that
 *     extent (callers keep them until jnl_enc_finish);
 *   - jnl_enc_length is never below the length jnl_enc_finish produces.
 * May call: libc.  Nothing here does I/O.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"

struct ext {
  uint64_t off, len;
  const uint8_t *src;          /* NULL: zeroes */
};

struct jnl_enc {
  struct ext *ext;
  size_t n, cap;
  uint64_t first_seq, last_seq;
  uint64_t in_entries, in_bytes;
  uint64_t data_bytes;         /* data bytes in ext */
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
    free (e->ext);
    free (e);
  }
}

void
jnl_enc_reset (struct jnl_enc *e)
{
  struct ext *keep = e->ext;
  size_t cap = e->cap;

  memset (e, 0, sizeof *e);
  e->ext = keep;
  e->cap = cap;
}

/* First extent that ends after off. */
static size_t
first_after (const struct jnl_enc *e, uint64_t off)
{
  size_t lo = 0, hi = e->n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (e->ext[mid].off + e->ext[mid].len > off)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

static uint64_t
data_of (const struct ext *x)
{
  return x->src ? x->len : 0;
}

int
jnl_enc_add (struct jnl_enc *e, uint64_t off, uint32_t len, const void *data, uint64_t seq)
{
  uint64_t end = off + len;
  struct ext pieces[3];
  size_t i, k, np = 0;

  if (len == 0 || end < off)
    return -EINVAL;
  if (e->n + 2 > e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 64;
    struct ext *p = realloc (e->ext, cap * sizeof *p);
    if (!p)
      return -ENOMEM;
    e->ext = p;
    e->cap = cap;
  }
  i = first_after (e, off);
  for (k = i; k < e->n && e->ext[k].off < end; k++)
    e->data_bytes -= data_of (&e->ext[k]);
  /* extents i .. k-1 overlap [off, end): keep what sticks out either side */
  if (k > i && e->ext[i].off < off)
    pieces[np++] = (struct ext) { e->ext[i].off, off - e->ext[i].off, e->ext[i].src };
  pieces[np++] = (struct ext) { off, len, data };
  if (k > i && e->ext[k - 1].off + e->ext[k - 1].len > end) {
    const struct ext *r = &e->ext[k - 1];
    pieces[np++] = (struct ext) { end, r->off + r->len - end, r->src ? r->src + (end - r->off) : NULL };
  }
  memmove (&e->ext[i + np], &e->ext[k], (e->n - k) * sizeof *e->ext);
  memcpy (&e->ext[i], pieces, np * sizeof *pieces);
  e->n = e->n - (k - i) + np;
  for (k = 0; k < np; k++)
    e->data_bytes += data_of (&pieces[k]);
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

uint64_t
jnl_enc_length (const struct jnl_enc *e)
{
  /* a merged run longer than JNL_EXT_MAX splits again: at most one entry
     more per JNL_EXT_MAX bytes */
  uint64_t n = e->n, i;

  for (i = 0; i < e->n; i++)
    n += e->ext[i].len / JNL_EXT_MAX;
  return batch_len (n, e->data_bytes);
}

/* Merge the sorted extents into the table (nothing written when tab is
 * NULL); the number of entries. */
static uint64_t
merge (const struct jnl_enc *e, struct jnl_entry *tab)
{
  uint64_t n = 0, i, pos;

  for (i = 0; i < e->n; i++) {
    const struct ext *x = &e->ext[i];
    for (pos = 0; pos < x->len; ) {
      uint32_t flags = x->src ? JNL_DATA : JNL_ZERO;
      uint64_t take = x->len - pos;
      struct jnl_entry *prev = n && tab ? &tab[n - 1] : NULL;
      if (prev && prev->flags == flags && prev->off + prev->len == x->off + pos &&
          prev->len < JNL_EXT_MAX) {
        if (take > JNL_EXT_MAX - prev->len)
          take = JNL_EXT_MAX - prev->len;
        prev->len += (uint32_t) take;
      }
      else {
        if (take > JNL_EXT_MAX)
          take = JNL_EXT_MAX;
        if (tab)
          tab[n] = (struct jnl_entry) { x->off + pos, (uint32_t) take, flags };
        n++;
      }
      pos += take;
    }
  }
  return n;
}

int
jnl_enc_finish (struct jnl_enc *e, const uint8_t group[16], const uint8_t device[16],
                void **buf, uint64_t *len, struct jnl_enc_stats *st)
{
  uint64_t max = jnl_enc_length (e), n, total, i;
  struct jnl_batch_hdr *h;
  struct jnl_entry *tab;
  uint8_t *p, *d;

  if (posix_memalign ((void **) &p, JNL_BLOCK, max) != 0)
    return -ENOMEM;
  memset (p, 0, max);
  tab = (struct jnl_entry *) (p + JNL_HDR_SIZE);
  n = merge (e, tab);
  total = batch_len (n, e->data_bytes);
  d = p + align_up (JNL_HDR_SIZE + n * sizeof *tab, JNL_BLOCK);
  for (i = 0; i < e->n; i++)
    if (e->ext[i].src) {
      memcpy (d, e->ext[i].src, e->ext[i].len);
      d += e->ext[i].len;
    }
  h = (struct jnl_batch_hdr *) p;
  memcpy (h->magic, JNL_BATCH_MAGIC, 8);
  h->version = JNL_VERSION;
  h->hdr_size = JNL_HDR_SIZE;
  memcpy (h->group, group, 16);
  memcpy (h->device, device, 16);
  h->first_seq = e->first_seq;
  h->last_seq = e->last_seq;
  h->nentries = (uint32_t) n;
  h->data_bytes = e->data_bytes;
  h->total_len = total;
  h->raw_bytes = e->in_bytes;
  if (st)
    *st = (struct jnl_enc_stats) { e->in_entries, e->in_bytes, n, e->data_bytes, total };
  *buf = p;
  *len = total;
  return 0;
}
