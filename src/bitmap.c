/* bitmap.c: see bitmap.h. */
#include <config.h>

#include <stdlib.h>

#include "bitmap.h"

struct bitmap *
bitmap_new (uint64_t size, uint64_t region_size)
{
  struct bitmap *b = calloc (1, sizeof *b);
  if (!b)
    return NULL;
  b->size = size;
  b->region_size = region_size;
  b->nbits = (size + region_size - 1) / region_size;
  b->words = calloc ((size_t) ((b->nbits + 63) / 64) + 1, sizeof *b->words);
  if (!b->words) {
    free (b);
    return NULL;
  }
  return b;
}

void
bitmap_free (struct bitmap *b)
{
  if (!b)
    return;
  free (b->changed);
  free (b->words);
  free (b);
}

int
bitmap_track_pages (struct bitmap *b, uint64_t words_per_page)
{
  b->words_per_page = words_per_page;
  b->npages = ((b->nbits + 63) / 64 + words_per_page - 1) / words_per_page;
  if (b->npages == 0)
    b->npages = 1;
  b->changed = calloc ((size_t) b->npages, 1);
  return b->changed ? 0 : -1;
}

/* Word w changed: flag its page (after the change, so that a flush that
 * clears the flag before copying the page never misses it). */
static inline void
changed (struct bitmap *b, uint64_t w)
{
  if (b->changed) {
    __atomic_store_n (&b->changed[w / b->words_per_page], 1, __ATOMIC_RELEASE);
    __atomic_store_n (&b->any_changed, 1, __ATOMIC_RELEASE);
  }
}

void
bitmap_set_range (struct bitmap *b, uint64_t off, uint64_t len)
{
  uint64_t first, last, i;

  if (len == 0 || off >= b->size)
    return;
  if (len > b->size - off)
    len = b->size - off;
  first = off / b->region_size;
  last = (off + len - 1) / b->region_size;
  for (i = first; i <= last; i++) {
    uint64_t bit = 1ull << (i % 64);
    if (!(__atomic_load_n (&b->words[i / 64], __ATOMIC_RELAXED) & bit)) {
      __atomic_fetch_or (&b->words[i / 64], bit, __ATOMIC_SEQ_CST);
      changed (b, i / 64);
    }
  }
}

void
bitmap_set_all (struct bitmap *b)
{
  bitmap_set_range (b, 0, b->size);
}

uint64_t
bitmap_count (const struct bitmap *b)
{
  uint64_t n = 0, i;
  for (i = 0; i < (b->nbits + 63) / 64; i++)
    n += (uint64_t) __builtin_popcountll (__atomic_load_n (&b->words[i], __ATOMIC_RELAXED));
  return n;
}

bool
bitmap_test (const struct bitmap *b, uint64_t bit)
{
  return bit < b->nbits &&
    (__atomic_load_n (&b->words[bit / 64], __ATOMIC_RELAXED) & (1ull << (bit % 64)));
}

void
bitmap_clear_bits (struct bitmap *b, uint64_t first, uint64_t n)
{
  uint64_t i;
  for (i = first; i < first + n && i < b->nbits; i++)
    if (__atomic_fetch_and (&b->words[i / 64], ~(1ull << (i % 64)), __ATOMIC_SEQ_CST) &
        (1ull << (i % 64)))
      changed (b, i / 64);
}

uint64_t
bitmap_next_set (const struct bitmap *b, uint64_t from)
{
  uint64_t i, w;

  if (from >= b->nbits)
    return b->nbits;
  i = from / 64;
  w = __atomic_load_n (&b->words[i], __ATOMIC_RELAXED) & (~0ull << (from % 64));
  for (;;) {
    if (w) {
      uint64_t bit = i * 64 + (uint64_t) __builtin_ctzll (w);
      return bit < b->nbits ? bit : b->nbits;
    }
    if (++i >= (b->nbits + 63) / 64)
      return b->nbits;
    w = __atomic_load_n (&b->words[i], __ATOMIC_RELAXED);
  }
}

uint64_t
bitmap_merge (struct bitmap *dst, struct bitmap *src)
{
  uint64_t i, n = 0;
  if (dst->nbits != src->nbits)
    return 0;
  for (i = 0; i < (src->nbits + 63) / 64; i++) {
    uint64_t w = __atomic_exchange_n (&src->words[i], 0, __ATOMIC_RELAXED);
    if (w) {
      n += (uint64_t) __builtin_popcountll (w);
      __atomic_fetch_or (&dst->words[i], w, __ATOMIC_SEQ_CST);
      changed (dst, i);
    }
  }
  return n;
}
