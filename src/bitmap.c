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
  free (b->words);
  free (b);
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
    if (!(__atomic_load_n (&b->words[i / 64], __ATOMIC_RELAXED) & bit))
      __atomic_fetch_or (&b->words[i / 64], bit, __ATOMIC_RELAXED);
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
