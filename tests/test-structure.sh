#!/bin/bash
# The source tree keeps the shape docs/ARCHITECTURE.md describes (scripts/check-structure.py):
# no file in src/ over 1,200 lines, no function over 100, and calls one way between files
# (no two files call each other, directly or around a circle).  First the checker is shown
# to catch each kind of violation on a small tree made here, then it runs on src/ and the
# plugin.
set -u
. "${TESTDIR:-$(dirname "$0")}/lib.sh" 2>/dev/null || . "$(dirname "$0")/lib.sh"
requires python3

CHK=$_top_dir/scripts/check-structure.py

# a.c calls b.c, b.c calls c.c: one way
mkdir -p "$T/ok" "$T/cycle" "$T/long"
cat > "$T/ok/a.c" <<'C'
int
a_top (void)
{
  return b_mid () + 1;
}
C
cat > "$T/ok/b.c" <<'C'
static int
helper (void)
{
  return c_low ();
}

int
b_mid (void)
{
  return helper ();
}
C
cat > "$T/ok/c.c" <<'C'
int
c_low (void)
{
  return 0;                     /* a_top () in a comment is not a call */
}
C
check "a tree whose calls go one way passes" python3 "$CHK" "$T/ok"

# c.c calls back into a.c: a circle a -> b -> c -> a
cp "$T/ok/a.c" "$T/ok/b.c" "$T/cycle/"
cat > "$T/cycle/c.c" <<'C'
int
c_low (void)
{
  return a_top ();
}
C
out=$(python3 "$CHK" "$T/cycle"); rc=$?
echo "$out" | sed 's/^/  | /'
check "a circle of calls is refused (rc $rc)" test $rc = 1
check "the message names the three files" \
  bash -c 'echo "$1" | grep -q "calls go both ways between .*a.c, .*b.c, .*c.c"' _ "$out"

# a function of 101 lines and a file of 1,201 lines
{ printf 'int\nlong_one (void)\n{\n'; for i in $(seq 97); do echo "  (void) $i;"; done; printf '  return 0;\n}\n'; } > "$T/long/f.c"
{ for i in $(seq 240); do printf 'int\nf%d (void)\n{\n  return %d;\n}\n' "$i" "$i"; done; echo "/* one more */"; } > "$T/long/g.c"
out=$(python3 "$CHK" "$T/long"); rc=$?
echo "$out" | sed 's/^/  | /'
check "a long function and a long file are refused (rc $rc)" test $rc = 1
check "the function is named with its length" bash -c 'echo "$1" | grep -q "f.c:2: long_one is 101 lines (limit 100)"' _ "$out"
check "the file is named with its length" bash -c 'echo "$1" | grep -q "g.c: 1201 lines (limit 1200)"' _ "$out"

# the real tree
out=$(python3 "$CHK" --table "$_top_dir/src" "$_top_dir/plugins/replicator"); rc=$?
echo "$out" | sed 's/^/  | /'
check "src/ and the plugin keep the limits and call one way" test $rc = 0

finish
