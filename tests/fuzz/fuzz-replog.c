/* fuzz-replog.c: libFuzzer harness for the recovery of an existing
 * replication log (replog_open on a log file whose bytes come from the
 * fuzzer): header validation, the choice between the two header copies,
 * the entry scan (check_entry), the identity check and the scrub.
 *
 * A log is at least 1 MiB, too big to be a fuzzer input, so the input
 * DESCRIBES a log: the harness builds a well-formed log from the
 * description (both header copies, devices, sites, a run of entries with
 * payloads, all checksummed), then applies the raw byte patches that
 * follow the description, then optionally recomputes checksums so that
 * patched fields get past the CRCs and reach the semantic checks.
 *
 * Input layout (little-endian; a short input reads as zeroes):
 *   u8  flags     F_* below
 *   u8  geometry  log size = 1 MiB + (g % 17) * 4096
 *   u64 salt
 *   u64 gen       copy A generation = gen & ~1 (even), B = A + 1 or A - 1
 *   u8  hsel      bit0 write copy A, bit1 write copy B (neither: a blank
 *                 log), bit2 B is the newer one, bit3 the older copy's site
 *                 records lag by one entry
 *   u16 present   sites present in the header
 *   u16 dirty     sites in dirty-log mode
 *   u8  delta[4]  applied of site i = first_seq - 1 + delta[i] (others: first_seq - 1)
 *   u8  sflags    site flags of sites 0..3, two bits each
 *   u8  ndev      devices "dev0".. (ndev % 5)
 *   u8  size[4]   device i size = (size % 64 + 1) * 64 KiB
 *   u8  bsmask    bit i: device i has 4096-byte blocks (else 512)
 *   u64 first_seq (0 reads as 1)
 *   u32 start_pos data_pos of the first entry
 *   u16 epoch0
 *   u8  n         entries; each is 4 bytes:
 *       u8 a: op = (a & 3) + 1, device = (a >> 2) & 3, bit4 FUA/may-trim
 *       u8 len, u8 off, u8 pattern (payload bytes)
 *   if F_ARGS: u32 argsel (bits 0-2 ndevices, 3-7 rename mask, 8-12 resize
 *              mask, 16-31 configured sites), u16 log_sites
 *   if F_SIZE: u16 sizesel (bit 15: file longer by (v & 0xff) * 512 bytes,
 *              else shorter: v % file size)
 *   if F_HOLE: u8 holesel (punch the 4 KiB block holesel % blocks, counted
 *              from the end of the file)
 *   then patches: u24 offset (mod file image), u8 len (% 64 + 1), bytes
 *
 * Invariants checked (ids in brackets, see fuzz-common.h):
 *   [replog-open]      open succeeds exactly when the reference (this file's
 *                      own reading of the format comment in replog.c) says
 *                      the log is usable, and reports exactly one error
 *                      when it fails, none when it succeeds;
 *   [replog-recovery]  header copy chosen, other_copy_bad, generation, the
 *                      recovered range [first_seq, last_seq], entry count
 *                      and payload bytes equal the reference scan; every
 *                      recovered entry reads back through the mapping with
 *                      a valid checksum; the new header is valid, carries
 *                      generation + 1 and the configured identity;
 *   [replog-seq-wrap]  a header copy whose applied sequences are >= 2^63
 *                      is not used (the tail, the scan and new sequence
 *                      numbers would wrap past 2^64: next_seq 0, an identity
 *                      check over an empty or endless range);
 *   [replog-seq-above-applied]  safety rule 3: after recovery the next
 *                      sequence number is above every recorded applied seq;
 *   [replog-gen-parity] "the copy that is being written is never the newest
 *                      valid one": a header copy whose generation parity
 *                      names the other copy is not used (open's header write,
 *                      generation + 1, would land on it);
 *   [replog-scrub]     every descriptor slot that does not hold a recovered
 *                      entry (or one the header's applied claims skip) is
 *                      zero after open.
 * Plus ASan/UBSan/LeakSanitizer on everything replog_open and
 * replog_close do.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cfg.h"
#include "replog.h"

#include "fuzz-common.h"

enum {
  F_FIX_A = 1,          /* recompute header copy A's crc after the patches */
  F_FIX_B = 2,          /* same for copy B */
  F_FIX_ENTRIES = 4,    /* recompute the crc of every descriptor with the entry magic */
  F_AUTO = 8,           /* mode auto (else open) */
  F_BASE = 16,          /* the log starts at byte 4096 of the file */
  F_ARGS = 32,          /* configured identity from the input, not from the header */
  F_SIZE = 64,          /* file shorter or longer than the log */
  F_HOLE = 128,         /* punch a hole into the file */
};

#define MiB (1024u * 1024u)
#define MAX_EXTRA 16u
#define IMG_MAX (RL_BLOCK + RL_MIN_LOG_SIZE + (MAX_EXTRA + 1) * RL_BLOCK + 255 * 512)
#define NDEV_MAX 5

static int memfd = -1;
static char mpath[64];
static uint8_t img[IMG_MAX];            /* the file as written (zero beyond fsize) */

struct geo {
  uint64_t size, ndesc, doff, db;
};

struct plan {
  unsigned flags;
  uint64_t base, log_size, fsize;
  struct geo g;
  bool hole;
  uint64_t hole_off;
  /* configured identity (replog_open_args) */
  unsigned ndev;
  char names[RL_MAX_DEVICES][RL_NAME_LEN];
  struct replog_dev_id ids[RL_MAX_DEVICES];
  uint32_t sites, log_sites;
  bool args_from_input;
  uint32_t argsel;
};

/* ---- reference reading of the format ------------------------------------------------ */

/* Geometry as the format defines it for a log of `size` bytes. */
static bool
ref_geometry (uint64_t size, struct geo *g)
{
  uint64_t n;
  if (size < RL_MIN_LOG_SIZE)
    return false;
  n = ((size - 2 * RL_HEADER_SIZE) / (RL_BLOCK + RL_DESC_SIZE)) & ~(uint64_t) 63;
  if (n < 64)
    return false;
  g->size = size;
  g->ndesc = n;
  g->doff = 2 * RL_HEADER_SIZE + n * RL_DESC_SIZE;
  g->db = (size - g->doff) / RL_BLOCK;
  return true;
}

/* Validity of one header copy (format comment: magic and version, crc,
 * self-consistent geometry that fits the file, sane records). */
/* A header whose applied sequences are so large that the scan or new
 * sequence numbers would pass 2^64 (only a forged header gets there). */
static bool
header_wraps (const struct rl_header *h)
{
  unsigned i;
  for (i = 0; i < RL_MAX_SITES; i++)
    if (h->sites[i].present && h->sites[i].applied >= (UINT64_C(1) << 63))
      return true;
  return false;
}

/* Header copy `copy` whose generation does not name it: the writer puts
 * generation g in copy g & 1, so this is the other copy seen from a wrong
 * offset (or a forged header), and the next write (g + 1) would land on it. */
static bool
header_misplaced (const struct rl_header *h, int copy)
{
  return (int) (h->generation & 1) != copy;
}

static const char *
ref_header_check (const struct rl_header *h, uint64_t room, bool strict, int copy)
{
  struct geo g;
  unsigned i;

  if (memcmp (h->magic, RL_MAGIC, 8) || h->version != RL_VERSION)
    return "magic/version";
  if (fz_crc32c (0, h, offsetof (struct rl_header, crc)) != h->crc)
    return "crc";
  if (h->header_size != RL_HEADER_SIZE || h->block_size != RL_BLOCK || h->desc_size != RL_DESC_SIZE)
    return "geometry";
  if (!ref_geometry (h->log_size, &g) || h->ndesc != g.ndesc || h->data_offset != g.doff ||
      h->data_blocks != g.db || h->desc_offset != 2 * RL_HEADER_SIZE)
    return "geometry";
  if (h->log_size > room)
    return "room";
  for (i = 0; i < RL_MAX_SITES; i++)
    if (h->sites[i].present > 1 || h->sites[i].mode > RL_MODE_DIRTY)
      return "site";
  for (i = 0; i < RL_MAX_DEVICES; i++)
    if (h->devices[i].present > 1 ||
        (h->devices[i].present && !memchr (h->devices[i].name, 0, RL_NAME_LEN)))
      return "device";
  if (strict && header_wraps (h))
    return "sequence numbers near 2^64";
  if (strict && copy >= 0 && header_misplaced (h, copy))
    return "generation of the other copy";
  return NULL;
}

static uint32_t
ref_desc_crc (uint64_t salt, const struct rl_desc *d, const uint8_t *payload)
{
  uint32_t c = fz_crc32c (0, &salt, 8);
  c = fz_crc32c (c, d, offsetof (struct rl_desc, crc));
  if (d->op == RL_OP_WRITE && payload)
    c = fz_crc32c (c, payload, d->length);
  return c;
}

struct scan {
  uint64_t tail, maxapplied, last, entries, bytes;
  bool used_dev[RL_MAX_DEVICES];
};

/* Entry validity rules (1)-(4) of the format comment; *nbp gets the
 * payload blocks.  `log` is the file view from the log's first byte. */
static bool
ref_entry_ok (const struct rl_header *h, const uint8_t *log, const struct rl_desc *d,
              uint64_t seq, uint64_t expect, bool first, uint64_t *nbp)
{
  const struct rl_dev_rec *dev;
  uint64_t nb, ringb, db = h->data_blocks;

  if (d->magic != RL_DESC_MAGIC || d->seq != seq)
    return false;
  if (d->op < RL_OP_WRITE || d->op > RL_OP_BARRIER)
    return false;
  if (d->device >= RL_MAX_DEVICES || !h->devices[d->device].present)
    return false;
  dev = &h->devices[d->device];
  if (d->op != RL_OP_BARRIER && ((uint64_t) d->offset > dev->size ||
                                 (uint64_t) d->length > dev->size - d->offset))
    return false;
  nb = d->op == RL_OP_WRITE ? ((uint64_t) d->length + RL_BLOCK - 1) / RL_BLOCK : 0;
  if (d->nblocks != nb || (d->op == RL_OP_WRITE && d->length == 0))
    return false;
  ringb = d->data_pos % db;
  if (ringb + nb > db)                    /* a payload never wraps */
    return false;
  if (!first && d->data_pos != expect) {
    /* only the padding skip to the next multiple of data_blocks, and only
     * when the payload would not have fitted before it */
    uint64_t gap = db - expect % db, target;
    if (expect % db == 0 || expect % db + nb <= db ||
        __builtin_add_overflow (expect, gap, &target) || d->data_pos != target)
      return false;
  }
  if (ref_desc_crc (h->salt, d, nb ? log + h->data_offset + ringb * RL_BLOCK : NULL) != d->crc)
    return false;
  *nbp = nb;
  return true;
}

static void
ref_scan (const struct rl_header *h, const uint8_t *log, struct scan *s)
{
  uint64_t tail = UINT64_MAX, seq, expect = 0, used = 0;
  unsigned i;

  memset (s, 0, sizeof *s);
  for (i = 0; i < RL_MAX_SITES; i++) {
    if (!h->sites[i].present)
      continue;
    if (h->sites[i].applied > s->maxapplied)
      s->maxapplied = h->sites[i].applied;
    if (h->sites[i].mode == RL_MODE_LOG && h->sites[i].applied + 1 < tail)
      tail = h->sites[i].applied + 1;
  }
  if (tail == UINT64_MAX)
    tail = s->maxapplied + 1;
  s->tail = tail;
  for (seq = tail; seq - tail < h->ndesc; seq++) {
    struct rl_desc d;
    uint64_t nb = 0;
    memcpy (&d, log + h->desc_offset + (seq % h->ndesc) * RL_DESC_SIZE, sizeof d);
    if (d.op == RL_OP_WRITE && d.nblocks > (64u << 20) / RL_BLOCK)
      break;
    if (!ref_entry_ok (h, log, &d, seq, expect, seq == tail, &nb))
      break;
    if (seq != tail)
      used += d.data_pos - expect;
    used += nb;
    if (used > h->data_blocks)           /* the data ring is exhausted */
      break;
    expect = d.data_pos + nb;
    s->entries++;
    s->bytes += d.op == RL_OP_WRITE ? d.length : 0;
    if (d.op != RL_OP_BARRIER)
      s->used_dev[d.device] = true;
  }
  s->last = seq - 1;
}

/* ---- building the file ------------------------------------------------------------------ */

static void
fix_header (uint8_t *p)
{
  struct rl_header h;
  memcpy (&h, p, sizeof h);
  h.crc = fz_crc32c (0, &h, offsetof (struct rl_header, crc));
  memcpy (p, &h, sizeof h);
}

/* Recompute the crc of every descriptor that has the entry magic (with
 * the payload, when it is where the descriptor says). */
static void
fix_entries (const struct rl_header *h, uint8_t *log)
{
  uint64_t i;
  for (i = 0; i < h->ndesc; i++) {
    uint8_t *p = log + h->desc_offset + i * RL_DESC_SIZE;
    struct rl_desc d;
    const uint8_t *payload = NULL;
    memcpy (&d, p, sizeof d);
    if (d.magic != RL_DESC_MAGIC)
      continue;
    if (d.op == RL_OP_WRITE) {
      uint64_t ringb = d.data_pos % h->data_blocks;
      if (ringb * RL_BLOCK + d.length <= h->data_blocks * RL_BLOCK)
        payload = log + h->data_offset + ringb * RL_BLOCK;
      else
        continue;
    }
    d.crc = ref_desc_crc (h->salt, &d, payload);
    memcpy (p, &d, sizeof d);
  }
}

/* The newest valid copy of the file view, or -1. */
static int
ref_choose (const struct plan *pl, struct rl_header hc[2], const char *why[2], bool *blank,
            bool strict)
{
  uint64_t room = pl->fsize > pl->base ? pl->fsize - pl->base : 0;
  unsigned i;

  *blank = true;
  for (i = 0; i < 2; i++) {
    size_t k;
    memcpy (&hc[i], img + pl->base + i * RL_HEADER_SIZE, sizeof hc[i]);
    if (pl->fsize < pl->base + (i + 1) * RL_HEADER_SIZE)
      memset (&hc[i], 0, sizeof hc[i]);      /* replog_open reads a missing copy as zeroes */
    for (k = 0; k < sizeof hc[i]; k++)
      if (((const uint8_t *) &hc[i])[k])
        *blank = false;
    why[i] = ref_header_check (&hc[i], room, strict, (int) i);
  }
  if (why[0] && why[1])
    return -1;
  if (why[0])
    return 1;
  if (why[1])
    return 0;
  return hc[1].generation > hc[0].generation;
}

/* Make img what reading the file will show: zeroes past its end and in
 * the hole. */
static void
file_view (const struct plan *pl)
{
  if (pl->fsize < sizeof img)
    memset (img + pl->fsize, 0, sizeof img - pl->fsize);
  if (pl->hole)
    memset (img + pl->hole_off, 0, RL_BLOCK);
}

static void
build (const uint8_t *data, size_t size, struct plan *pl)
{
  struct fz_in in = { data, size };
  struct rl_header h, older;
  uint8_t *log;
  uint64_t salt, gen, first, pos, epoch;
  uint8_t hsel, delta[4], sflags, bsmask, sz[4];
  uint16_t present, dirty;
  unsigned i, n, k, ndev;
  int use;
  struct rl_header hc[2];
  const char *why[2];
  bool blank;

  memset (pl, 0, sizeof *pl);
  pl->flags = fz_u8 (&in);
  pl->log_size = RL_MIN_LOG_SIZE + (fz_u8 (&in) % (MAX_EXTRA + 1)) * RL_BLOCK;
  pl->base = (pl->flags & F_BASE) ? RL_BLOCK : 0;
  ref_geometry (pl->log_size, &pl->g);
  salt = fz_u64 (&in);
  gen = fz_u64 (&in) & ~(uint64_t) 1;
  hsel = fz_u8 (&in);
  present = fz_u16 (&in);
  dirty = fz_u16 (&in);
  for (i = 0; i < 4; i++)
    delta[i] = fz_u8 (&in);
  sflags = fz_u8 (&in);
  ndev = fz_u8 (&in) % NDEV_MAX;
  for (i = 0; i < 4; i++)
    sz[i] = fz_u8 (&in);
  bsmask = fz_u8 (&in);
  first = fz_u64 (&in);
  if (first == 0)
    first = 1;
  pos = fz_u32 (&in);
  epoch = fz_u16 (&in);
  n = fz_u8 (&in);

  memset (img, 0, sizeof img);
  if (pl->base)
    memset (img, 0x5a, pl->base);
  log = img + pl->base;

  /* The header. */
  memset (&h, 0, sizeof h);
  memcpy (h.magic, RL_MAGIC, 8);
  h.version = RL_VERSION;
  h.header_size = RL_HEADER_SIZE;
  h.generation = gen;
  h.salt = salt;
  h.log_size = pl->log_size;
  h.block_size = RL_BLOCK;
  h.desc_size = RL_DESC_SIZE;
  h.desc_offset = 2 * RL_HEADER_SIZE;
  h.ndesc = pl->g.ndesc;
  h.data_offset = pl->g.doff;
  h.data_blocks = pl->g.db;
  h.created = 1700000000;
  for (i = 0; i < RL_MAX_SITES; i++) {
    struct rl_site_rec *s = &h.sites[i];
    if (!(present & (1u << i)))
      continue;
    s->present = 1;
    s->mode = (dirty & (1u << i)) ? RL_MODE_DIRTY : RL_MODE_LOG;
    s->applied = first - 1 + (i < 4 ? delta[i] : 0);
    s->flags = i < 4 ? (sflags >> (2 * i)) & 3 : 0;
    h.nsites++;
  }
  for (i = 0; i < ndev; i++) {
    struct rl_dev_rec *d = &h.devices[i];
    snprintf (d->name, sizeof d->name, "dev%u", i);
    d->size = (uint64_t) (sz[i % 4] % 64 + 1) * 65536;
    d->block_size = (bsmask & (1u << i)) ? 4096 : 512;
    d->present = 1;
    h.ndevices++;
  }

  /* The entries, as the writer lays them out. */
  for (k = 0; k < n; k++) {
    uint8_t a = fz_u8 (&in), len = fz_u8 (&in), off = fz_u8 (&in), pat = fz_u8 (&in);
    struct rl_desc d;
    uint64_t nb = 0, devsize = 0, seq = first + k;
    uint8_t *payload = NULL;

    memset (&d, 0, sizeof d);
    d.magic = RL_DESC_MAGIC;
    d.op = (uint8_t) ((a & 3) + 1);
    d.device = (uint16_t) ((a >> 2) & 3);
    d.seq = seq;
    if (d.device < ndev)
      devsize = h.devices[d.device].size;
    if (d.op == RL_OP_WRITE || d.op == RL_OP_ZERO || d.op == RL_OP_TRIM) {
      uint64_t length = d.op == RL_OP_WRITE ? ((uint64_t) len + 1) * 512 : ((uint64_t) len + 1) * 4096;
      if (devsize && length > devsize)
        length = devsize;
      d.length = (uint32_t) length;
      d.offset = devsize ? ((uint64_t) off * 4096) % (devsize - length + 1) / 512 * 512 : 0;
      if (d.op == RL_OP_ZERO && (a & 0x10))
        d.flags = RL_FLAG_MAY_TRIM;
    }
    else if (a & 0x10)
      d.flags = RL_FLAG_FUA;
    if (d.op == RL_OP_WRITE) {
      uint64_t j;
      nb = (d.length + RL_BLOCK - 1) / RL_BLOCK;
      if (pos % pl->g.db + nb > pl->g.db)
        pos += pl->g.db - pos % pl->g.db;       /* padding to the wrap */
      payload = log + pl->g.doff + (pos % pl->g.db) * RL_BLOCK;
      memset (payload, 0, nb * RL_BLOCK);
      for (j = 0; j < d.length; j++)
        payload[j] = (uint8_t) (pat + j * 7);
    }
    d.nblocks = (uint32_t) nb;
    d.data_pos = pos;
    d.epoch = epoch;
    d.time_ns = 1700000000000000000ull + k;
    d.crc = ref_desc_crc (salt, &d, payload);
    memcpy (log + h.desc_offset + (seq % h.ndesc) * RL_DESC_SIZE, &d, sizeof d);
    pos += nb;
    if (d.op == RL_OP_BARRIER)
      epoch++;
  }

  /* Header copies: the newer gets `gen` (+1 when it is B), each in the
   * copy its generation's parity names. */
  older = h;
  if (hsel & 8)
    for (i = 0; i < RL_MAX_SITES; i++)
      if (older.sites[i].present && older.sites[i].applied >= first)
        older.sites[i].applied--;
  {
    struct rl_header a = h, b = older;
    if (hsel & 4) {                       /* B newer */
      a = older;
      b = h;
      b.generation = gen + 1;
    }
    else
      b.generation = gen - 1;              /* odd */
    a.crc = fz_crc32c (0, &a, offsetof (struct rl_header, crc));
    b.crc = fz_crc32c (0, &b, offsetof (struct rl_header, crc));
    if (hsel & 1)
      memcpy (log, &a, sizeof a);
    if (hsel & 2)
      memcpy (log + RL_HEADER_SIZE, &b, sizeof b);
  }

  /* The configured identity. */
  pl->args_from_input = pl->flags & F_ARGS;
  if (pl->args_from_input) {
    pl->argsel = fz_u32 (&in);
    pl->log_sites = fz_u16 (&in);
  }
  pl->fsize = pl->base + pl->log_size;
  if (pl->flags & F_SIZE) {
    uint16_t v = fz_u16 (&in);
    if (v & 0x8000)
      pl->fsize += (uint64_t) (v & 0xff) * 512;
    else
      pl->fsize = v % pl->fsize;
  }
  if (pl->flags & F_HOLE) {
    uint8_t v = fz_u8 (&in);
    uint64_t blocks = pl->fsize / RL_BLOCK;
    if (blocks) {
      pl->hole = true;
      pl->hole_off = (blocks - 1 - v % blocks) * RL_BLOCK;
    }
  }

  /* Raw patches over the file image up to the log's end. */
  while (in.n >= 4) {
    uint64_t off = fz_take (&in, 3);
    unsigned len = fz_u8 (&in) % 64 + 1, j;
    uint64_t limit = pl->base + pl->log_size;
    off %= limit;
    for (j = 0; j < len && in.n; j++) {
      if (off + j < limit)
        img[off + j] = fz_u8 (&in);
      else
        (void) fz_u8 (&in);
    }
  }
  if (pl->flags & F_FIX_A)
    fix_header (log);
  if (pl->flags & F_FIX_B)
    fix_header (log + RL_HEADER_SIZE);
  file_view (pl);

  /* Entry checksums under the salt of the header open will use. */
  use = ref_choose (pl, hc, why, &blank, false);
  if ((pl->flags & F_FIX_ENTRIES) && use >= 0) {
    fix_entries (&hc[use], log);
    file_view (pl);
  }
  (void) why;
  (void) blank;
}

/* Identity given to replog_open: the chosen header's own (so the identity
 * check passes), or derived from argsel. */
static void
make_args (struct plan *pl, const struct rl_header *h)
{
  unsigned i, top = 0;

  for (i = 0; i < RL_MAX_DEVICES; i++)
    if (h && h->devices[i].present)
      top = i + 1;
  pl->ndev = pl->args_from_input ? (pl->argsel & 7) % (NDEV_MAX + 1) : top;
  for (i = 0; i < pl->ndev; i++) {
    if (h && h->devices[i].present) {
      snprintf (pl->names[i], RL_NAME_LEN, "%s", h->devices[i].name);
      pl->ids[i].size = h->devices[i].size;
      pl->ids[i].block_size = h->devices[i].block_size;
    }
    else {
      snprintf (pl->names[i], RL_NAME_LEN, "spare%u", i);
      pl->ids[i].size = 65536;
      pl->ids[i].block_size = 512;
    }
    if (pl->args_from_input && (pl->argsel & (8u << i)))
      snprintf (pl->names[i], RL_NAME_LEN, "renamed%u", i);
    if (pl->args_from_input && (pl->argsel & (256u << i)))
      pl->ids[i].size += 4096;
    pl->ids[i].name = pl->names[i];
  }
  if (pl->args_from_input)
    pl->sites = pl->argsel >> 16;
  else {
    pl->sites = 0;
    for (i = 0; h && i < RL_MAX_SITES; i++)
      if (h->sites[i].present)
        pl->sites |= 1u << i;
    pl->log_sites = pl->sites;
  }
}

static void
write_file (const struct plan *pl)
{
  uint64_t n = pl->fsize < sizeof img ? pl->fsize : sizeof img;
  uint64_t done = 0;

  if (ftruncate (memfd, 0) == -1) {
    perror ("ftruncate");
    abort ();
  }
  while (done < n) {
    ssize_t r = pwrite (memfd, img + done, n - done, (off_t) done);
    if (r <= 0) {
      perror ("pwrite");
      abort ();
    }
    done += (uint64_t) r;
  }
  if (pl->fsize > n && ftruncate (memfd, (off_t) pl->fsize) == -1) {
    perror ("ftruncate");
    abort ();
  }
  if (pl->hole && fallocate (memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             (off_t) pl->hole_off, RL_BLOCK) == -1) {
    perror ("fallocate");
    abort ();
  }
}

static void
read_file (uint64_t off, void *buf, size_t len)
{
  memset (buf, 0, len);
  if (pread (memfd, buf, len, (off_t) off) < 0) {
    perror ("pread");
    abort ();
  }
}

/* ---- the checks after a successful open ---------------------------------------------------- */

static void
check_opened (const struct plan *pl, struct replog *rl, const struct replog_recovery *rec,
              const struct rl_header *old, int use, const char *why_other,
              const char *why_other_doc, const struct rl_header *other, const struct scan *s)
{
  struct replog_stats st;
  struct rl_header nh, disk_new, disk_old;
  uint64_t seq, i, maxapplied = 0;
  const uint8_t *log = img + pl->base;
  uint8_t *ring;
  size_t ringlen = old->ndesc * RL_DESC_SIZE;

  FZ_CHECK ("replog-recovery", !rec->created, "an existing log was recreated");
  FZ_CHECK ("replog-recovery", rec->header_copy == use, "header copy %d used, reference says %d",
            rec->header_copy, use);
  /* The other copy: bad by the format's validity rules, or by the two
   * rules they imply (a copy with applied >= 2^63, or with the other
   * copy's generation parity, is not one open may ever use). */
  FZ_CHECK ("replog-recovery", rec->other_copy_bad == (why_other != NULL) ||
            rec->other_copy_bad == (why_other_doc != NULL),
            "other_copy_bad=%d but the reference says the other copy is %s",
            rec->other_copy_bad, why_other ? why_other : "valid");
  if (rec->other_copy_bad != (why_other != NULL)) {
    FZ_CHECK (header_wraps (other) ? "replog-seq-wrap" : "replog-gen-parity", false,
              "header copy %c (%s) counted as a valid copy", 'A' + !use, why_other);
  }
  FZ_CHECK ("replog-recovery", !rec->other_copy_bad || fz_rep.warnings >= 1,
            "fell back to one header copy without a warning");
  FZ_CHECK ("replog-recovery", rec->generation == old->generation, "generation %" PRIu64
            " reported, header has %" PRIu64, rec->generation, old->generation);
  FZ_CHECK ("replog-recovery", rec->first_seq == s->tail && rec->entries == s->entries &&
            rec->bytes == s->bytes && (!s->entries || rec->last_seq == s->last),
            "recovered [%" PRIu64 ", %" PRIu64 "] %" PRIu64 " entries %" PRIu64 " bytes (%s); "
            "reference [%" PRIu64 ", %" PRIu64 "] %" PRIu64 " entries %" PRIu64 " bytes",
            rec->first_seq, rec->last_seq, rec->entries, rec->bytes,
            rec->stop_reason ? rec->stop_reason : "?", s->tail, s->last, s->entries, s->bytes);
  FZ_CHECK ("replog-recovery", rec->stop_reason != NULL, "no stop reason");

  /* Every recovered entry, through the mapping, is the one in the file
   * and still validates. */
  for (seq = s->tail; s->entries && seq <= s->last; seq++) {
    const struct rl_desc *d = replog_desc (rl, seq);
    FZ_CHECK ("replog-recovery", !memcmp (d, log + old->desc_offset + (seq % old->ndesc) * RL_DESC_SIZE,
                                          RL_DESC_SIZE), "entry %" PRIu64 " changed by open", seq);
    FZ_CHECK ("replog-recovery", d->seq == seq &&
              ref_desc_crc (old->salt, d, d->op == RL_OP_WRITE ? replog_payload (rl, d) : NULL) == d->crc,
              "entry %" PRIu64 " does not validate through the mapping", seq);
  }

  replog_get_stats (rl, &st);
  for (i = 0; i < RL_MAX_SITES; i++)
    if (old->sites[i].present && old->sites[i].applied > maxapplied)
      maxapplied = old->sites[i].applied;
  FZ_CHECK ("replog-recovery", st.ndesc == old->ndesc && st.data_blocks == old->data_blocks,
            "geometry differs from the header");
  FZ_CHECK ("replog-recovery", st.committed_seq == st.next_seq - 1 && st.durable_seq == st.next_seq - 1,
            "committed/durable %" PRIu64 "/%" PRIu64 " with next %" PRIu64,
            st.committed_seq, st.durable_seq, st.next_seq);
  FZ_CHECK ("replog-recovery", !s->entries || st.next_seq > s->last,
            "next_seq %" PRIu64 " not after the last recovered entry %" PRIu64, st.next_seq, s->last);

  /* The header open wrote: once (generation + 1, to the other copy), or
   * both copies in turn (+ 1 to the other copy, then + 2 to the one
   * recovered from), each synced before the next. */
  replog_get_header (rl, &nh);
  FZ_CHECK ("replog-recovery", nh.generation == old->generation + 1 ||
            nh.generation == old->generation + 2,
            "new header generation %" PRIu64 " after %" PRIu64, nh.generation, old->generation);
  FZ_CHECK ("replog-recovery", ref_header_check (&nh, pl->fsize - pl->base, false, -1) == NULL,
            "the header written at open is invalid (%s)",
            ref_header_check (&nh, pl->fsize - pl->base, false, -1));
  FZ_CHECK ("replog-recovery", nh.clean == 0, "header marked clean at open");
  for (i = 0; i < RL_MAX_DEVICES; i++) {
    const struct rl_dev_rec *d = &nh.devices[i];
    if (i < pl->ndev)
      FZ_CHECK ("replog-recovery", d->present == 1 && !strcmp (d->name, pl->names[i]) &&
                d->size == pl->ids[i].size && d->block_size == pl->ids[i].block_size,
                "device %" PRIu64 " identity not the configured one", i);
    else
      FZ_CHECK ("replog-recovery", !d->present, "device %" PRIu64 " present but not configured", i);
  }
  for (i = 0; i < RL_MAX_SITES; i++) {
    const struct rl_site_rec *sr = &nh.sites[i];
    bool want = pl->sites & (1u << i);
    FZ_CHECK ("replog-recovery", sr->present == want, "site %" PRIu64 " present=%u configured=%d",
              i, sr->present, want);
    if (want && !old->sites[i].present)
      FZ_CHECK ("replog-recovery", (rec->new_sites & (1u << i)) &&
                sr->mode == ((pl->log_sites & (1u << i)) ? RL_MODE_LOG : RL_MODE_DIRTY),
                "new site %" PRIu64 " not recorded as new, or in the wrong mode", i);
    if (want)
      FZ_CHECK ("replog-seq-above-applied", sr->applied < st.next_seq,
                "site %" PRIu64 " applied %" PRIu64 " but new entries start at %" PRIu64
                " (safety rule 3)", i, sr->applied, st.next_seq);
  }
  /* The tail: the oldest entry a log-mode site still needs (never back). */
  {
    uint64_t t = st.next_seq;
    for (i = 0; i < RL_MAX_SITES; i++)
      if (nh.sites[i].present && nh.sites[i].mode == RL_MODE_LOG && nh.sites[i].applied + 1 < t)
        t = nh.sites[i].applied + 1;
    if (t < s->tail)
      t = s->tail;
    FZ_CHECK ("replog-recovery", st.tail_seq == t, "tail %" PRIu64 ", expected %" PRIu64,
              st.tail_seq, t);
  }
  FZ_CHECK ("replog-seq-above-applied", st.next_seq > maxapplied && st.next_seq != 0,
            "next_seq %" PRIu64 " not above the recorded applied %" PRIu64, st.next_seq, maxapplied);

  /* On disk: the newest header in copy generation & 1; the other copy
   * either untouched (one write: it is the copy recovered from) or the
   * same header one generation earlier (both written). */
  read_file (pl->base + (nh.generation & 1) * RL_HEADER_SIZE, &disk_new, sizeof disk_new);
  FZ_CHECK ("replog-recovery", !memcmp (&disk_new, &nh, sizeof nh),
            "the header on disk is not the one in memory");
  read_file (pl->base + (!(nh.generation & 1)) * RL_HEADER_SIZE, &disk_old, sizeof disk_old);
  if (nh.generation == old->generation + 1)
    FZ_CHECK ("replog-gen-parity", !memcmp (&disk_old, old, sizeof disk_old),
              "open overwrote header copy %c, the newest valid one it recovered from (generation %"
              PRIu64 " in copy %c: the parity does not name that copy)",
              'A' + use, old->generation, 'A' + use);
  else {
    struct rl_header expect = nh;
    expect.generation = nh.generation - 1;
    expect.crc = fz_crc32c (0, &expect, offsetof (struct rl_header, crc));
    FZ_CHECK ("replog-recovery", !memcmp (&disk_old, &expect, sizeof expect),
              "open wrote both header copies, but copy %c is not the newest one at generation %"
              PRIu64, 'A' + (int) !(nh.generation & 1), expect.generation);
  }

  /* Scrub: slots without a recovered entry are zero.  (Not checked when
   * the sequence window wraps past 2^64: slot = seq % ndesc is not
   * contiguous there, and only a forged header gets there.) */
  if (s->tail > UINT64_MAX - 2 * old->ndesc)
    return;
  ring = malloc (ringlen);
  if (!ring)
    abort ();
  read_file (pl->base + old->desc_offset, ring, ringlen);
  for (i = 0; i < old->ndesc; i++) {
    static const uint8_t zero[RL_DESC_SIZE];
    /* seq held by slot i in [tail, tail + ndesc) */
    uint64_t sq = s->tail + ((i + old->ndesc - s->tail % old->ndesc) % old->ndesc);
    bool recovered = s->entries && sq >= s->tail && sq <= s->last;
    bool skipped = sq >= s->tail && sq < st.next_seq;     /* claimed by an applied seq */
    if (recovered || (skipped && st.next_seq > s->last + 1))
      continue;
    FZ_CHECK ("replog-scrub", !memcmp (ring + i * RL_DESC_SIZE, zero, RL_DESC_SIZE),
              "descriptor slot %" PRIu64 " (seq %" PRIu64 ") not zeroed after recovery", i, sq);
  }
  free (ring);
}

/* ---- the fuzzer entry points ----------------------------------------------------------------- */

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  memfd = memfd_create ("nbdr-fuzz-replog", MFD_CLOEXEC);
  if (memfd == -1) {
    perror ("memfd_create");
    exit (1);
  }
  snprintf (mpath, sizeof mpath, "/proc/self/fd/%d", memfd);
  fz_crc_selftest ();
  fz_reports_install ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct plan pl;
  struct rl_header hc[2], hc_doc[2];
  const char *why[2], *why_doc[2];
  bool blank, expect_ok, gap;
  int use, use_doc, r;
  struct scan s;
  struct replog_open_args a;
  struct replog *rl = NULL;
  struct replog_recovery rec;

  build (data, size, &pl);
  /* The copy replog_open must use: the format comment's validity rules,
   * plus two that follow from it but that replog_header_check lacks:
   * applied sequences below 2^63 ([replog-seq-wrap]) and a generation
   * whose parity names the copy ([replog-gen-parity]).  use_doc: the copy
   * the validity rules alone pick; when that one breaks the other two
   * (`gap`), open must refuse it (or fall back to the other copy). */
  use = ref_choose (&pl, hc, why, &blank, true);
  use_doc = ref_choose (&pl, hc_doc, why_doc, &blank, false);
  gap = use_doc >= 0 && (header_wraps (&hc_doc[use_doc]) ||
                                 header_misplaced (&hc_doc[use_doc], use_doc));
  /* The identity of the copy the code will use, so that the interesting
   * paths are not cut short by an identity refusal. */
  make_args (&pl, gap ? &hc_doc[use_doc] : use >= 0 ? &hc[use] : NULL);
  write_file (&pl);

  memset (&s, 0, sizeof s);
  if (use >= 0)
    ref_scan (&hc[use], img + pl.base, &s);

  memset (&a, 0, sizeof a);
  a.path = mpath;
  a.offset = pl.base;
  a.size = pl.log_size;
  a.mode = (pl.flags & F_AUTO) ? LOG_MODE_AUTO : LOG_MODE_OPEN;
  a.commit_interval_ms = 5;
  a.ndevices = pl.ndev;
  a.devices = pl.ids;
  a.sites = pl.sites;
  a.log_sites = pl.log_sites;

  /* What the format comment says open must do. */
  if (a.mode == LOG_MODE_AUTO && blank)
    expect_ok = true;                     /* created */
  else if (use < 0)
    expect_ok = false;                    /* no valid header copy */
  else if (pl.hole && pl.hole_off < pl.base + hc[use].log_size &&
           pl.hole_off + RL_BLOCK > pl.base)
    expect_ok = false;                    /* safety rule 9 */
  else {
    unsigned i;
    expect_ok = true;
    for (i = 0; i < RL_MAX_DEVICES; i++) {        /* safety rule 7 */
      const struct rl_dev_rec *d = &hc[use].devices[i];
      if (s.entries && s.used_dev[i] &&
          (i >= pl.ndev || strcmp (d->name, pl.names[i]) || d->size != pl.ids[i].size ||
           d->block_size != pl.ids[i].block_size))
        expect_ok = false;
    }
    for (i = 0; i < RL_MAX_SITES; i++) {
      const struct rl_site_rec *sr = &hc[use].sites[i];
      if (sr->present && !(pl.sites & (1u << i)) && sr->mode == RL_MODE_LOG && s.entries &&
          sr->applied < s.last)
        expect_ok = false;
    }
  }

  if (getenv ("NBDR_FUZZ_DEBUG")) {
    unsigned i;
    fprintf (stderr, "plan: flags %#x base %" PRIu64 " log %" PRIu64 " file %" PRIu64
             " hole %d@%" PRIu64 " copy %d (A: %s, B: %s) blank %d expect_ok %d\n",
             pl.flags, pl.base, pl.log_size, pl.fsize, pl.hole, pl.hole_off, use,
             why[0] ? why[0] : "ok", why[1] ? why[1] : "ok", blank, expect_ok);
    fprintf (stderr, "scan: tail %" PRIu64 " last %" PRIu64 " entries %" PRIu64 " maxapplied %"
             PRIu64 "\nargs: ndev %u sites %#x log_sites %#x\n", s.tail, s.last, s.entries,
             s.maxapplied, pl.ndev, pl.sites, pl.log_sites);
    for (i = 0; use >= 0 && i < RL_MAX_SITES; i++)
      if (hc[use].sites[i].present)
        fprintf (stderr, "  site %u mode %u flags %u applied %" PRIu64 "\n", i,
                 hc[use].sites[i].mode, hc[use].sites[i].flags, hc[use].sites[i].applied);
    for (i = 0; use >= 0 && i < RL_MAX_DEVICES; i++)
      if (hc[use].devices[i].present || s.used_dev[i])
        fprintf (stderr, "  device %u present %u '%.64s' size %" PRIu64 " used %d\n", i,
                 hc[use].devices[i].present, hc[use].devices[i].name, hc[use].devices[i].size,
                 s.used_dev[i]);
  }
  if (gap && header_wraps (&hc_doc[use_doc]) && fz_allowed ("replog-seq-wrap")) {
    /* A known finding that can also hang open (check_identity loops for
     * ever over a range ending at 2^64 - 1): when tolerated, count it and
     * do not go there. */
    fz_violation ("replog-seq-wrap", __FILE__, __LINE__, "skipped");
    return 0;
  }
  fz_reports_reset ();
  r = replog_open (&a, &rl, &rec);
  if (gap && r == 0 && !why_doc[rec.header_copy] &&
      header_misplaced (&hc_doc[rec.header_copy], rec.header_copy)) {
    /* [replog-gen-parity] The copy used holds the generation of the other
     * copy: open's header write (generation + 1) goes to the very copy it
     * recovered from, the newest valid one, contrary to the format
     * comment; with replog.offset one page off on a device or file larger
     * than the log, this is how the real log gets overwritten. */
    FZ_CHECK ("replog-gen-parity", false, "open used header copy %c holding generation %" PRIu64
              " (a generation of copy %c): its (first) header write overwrites the copy it "
              "recovered from",
              'A' + rec.header_copy, hc_doc[rec.header_copy].generation, 'A' + !rec.header_copy);
    replog_close (rl);
    return 0;
  }
  if (gap && r == 0 && header_wraps (&hc_doc[rec.header_copy])) {
    /* [replog-seq-wrap] A header copy with a valid checksum whose applied
     * sequence is >= 2^63 is used: the tail (applied + 1), the scan and
     * new sequence numbers wrap past 2^64 (next_seq 0, an identity check
     * over an empty range, scrubbed live slots).  Open should refuse the
     * copy ("bad site record") as it refuses other impossible values. */
    FZ_CHECK ("replog-seq-wrap", false, "open used header copy %c whose applied sequence is >= 2^63 "
              "(tail %" PRIu64 ", next entries from %" PRIu64 ")", 'A' + rec.header_copy,
              rec.first_seq, rec.last_seq + 1);
    replog_close (rl);
    return 0;
  }
  if (gap && r == -1) {
    FZ_CHECK ("replog-open", fz_rep.errors == 1, "open failed with %u error messages (first: %s)",
              fz_rep.errors, fz_rep.first_error);
    return 0;
  }
  if (r == -1) {
    FZ_CHECK ("replog-open", fz_rep.errors == 1, "open failed with %u error messages (first: %s)",
              fz_rep.errors, fz_rep.first_error);
    FZ_CHECK ("replog-open", !expect_ok, "open refused a usable log: %s", fz_rep.first_error);
    return 0;
  }
  FZ_CHECK ("replog-open", r == 0 && rl, "replog_open returned %d", r);
  FZ_CHECK ("replog-open", fz_rep.errors == 0, "open succeeded but reported an error: %s",
            fz_rep.first_error);
  FZ_CHECK ("replog-open", expect_ok, "open accepted a log the format says is unusable "
            "(valid copy: %d, hole: %d at %" PRIu64 ")", use, pl.hole, pl.hole_off);
  if (a.mode == LOG_MODE_AUTO && blank)
    FZ_CHECK ("replog-open", rec.created, "a blank log in mode auto was not created");
  else
    check_opened (&pl, rl, &rec, &hc[use], use, why[!use], why_doc[!use], &hc[!use], &s);
  replog_close (rl);
  return 0;
}
