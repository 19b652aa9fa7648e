#!/usr/bin/env bash
# The house limits (shared/STYLE.md): no source file over 900 lines, no C
# function over 120 lines outside tests/. Prints each breach and exits 1 if
# there is one; with -v also prints the longest functions and files.
#   scripts/check_sizes.sh [-v]
# Functions are found by the layout the tree uses: a head at column 0
# (storage class, type and name before `(`), the body closed by a `}` at
# column 0; the count runs from the head's first line to that `}`.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_FILE=900
MAX_FUNC=120
verbose=0
[[ "${1:-}" == -v ]] && verbose=1

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- '*.c' '*.h' '*.sh' '*.js' '*.css' '*.html' '*.def' '*.py' \
                         '*.cmake' '*.in' 'CMakeLists.txt' '*/CMakeLists.txt')
else
  mapfile -t files < <(find . -path ./build -prune -o -type f \( -name '*.[ch]' -o -name '*.sh' \
                         -o -name '*.js' -o -name '*.css' -o -name '*.html' -o -name '*.def' \
                         -o -name '*.py' -o -name '*.cmake' -o -name '*.in' -o -name CMakeLists.txt \) \
                         -print | sed 's|^\./||')
fi
present=(); for f in "${files[@]}"; do [[ -f $f ]] && present+=("$f"); done
files=("${present[@]}")
mapfile -t csrc < <(printf '%s\n' "${files[@]}" | grep -E '\.[ch]$')

bad=0
long_files=$(wc -l -- "${files[@]}" | awk '$2 != "total"' | sort -rn)
while read -r n f; do
  if ((n > MAX_FILE)); then echo "file over $MAX_FILE lines: $f ($n)"; bad=1; fi
done <<<"$long_files"

funcs=$(awk '
function is_head(l) {
  return l ~ /^[A-Za-z_][A-Za-z_0-9 \t\*]*\(/ && l !~ /;[ \t]*$/ && l !~ /=/ &&
         l !~ /^(typedef|return|else|if|for|while|switch)[ \t(]/ && l !~ /\{.*\}[ \t]*$/
}
FNR == 1 { st = 0; cmt = 0 }
{
  line = $0
  if (cmt) { if (line ~ /\*\//) { cmt = 0; sub(/^.*\*\//, "", line) } else next }
  if (line ~ /^[ \t]*\/\*/ && line !~ /\*\//) { cmt = 1; next }
  h = line
  gsub(/__attribute__\(\([^()]*(\([^()]*\))?[^()]*\)\)[ \t]*/, "", h)
}
st < 2 && is_head(h) {
  start = FNR; name = h; sub(/[ \t]*\(.*/, "", name); sub(/.*[ \t\*]/, "", name)
  st = (h ~ /\{[ \t]*$/) ? 2 : 1; next
}
st == 1 { if (line ~ /;[ \t]*$/) st = 0; else if (line ~ /^\{/ || line ~ /\{[ \t]*$/) st = 2; next }
st == 2 && line ~ /^\}/ { print FNR - start + 1, FILENAME ":" start, name; st = 0 }
' "${csrc[@]}" | sort -rn)
while read -r n where name; do
  [[ $where == tests/* ]] && continue
  if ((n > MAX_FUNC)); then echo "function over $MAX_FUNC lines: $name at $where ($n)"; bad=1; fi
done <<<"$funcs"

if ((verbose)); then
  echo "longest functions outside tests/:"
  awk '$2 !~ /^tests\// && ++k <= 10 { print "  " $0 }' <<<"$funcs"
  echo "longest files:"
  awk 'NR <= 5 { print "  " $0 }' <<<"$long_files"
fi
if ((bad)); then exit 1; fi
echo "sizes ok: ${#files[@]} files <= $MAX_FILE lines, $(wc -l <<<"$funcs") C functions, none over $MAX_FUNC lines outside tests/"
