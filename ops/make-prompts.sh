#!/usr/bin/env bash
# Builds prompts.jsonl from Debian's package descriptions: real text that no
# one here wrote. One JSON object per line: {"id", "text", "synopsis", "long",
# "domain"} where
#   id       = package name,
#   text     = the package's Description (synopsis and long text, paragraph
#              markers " ." removed, whitespace collapsed, cut at 2000 bytes),
#   synopsis = its first line alone, long = the long text alone ("" if none),
#              cleaned and cut the same way,
#   domain   = its Section without an archive area prefix ("contrib/games" -> "games").
# The synopsis comes from `apt-cache dumpavail`; the long text from apt's
# Translation-en index (Debian ships long descriptions only there), joined by
# Description-md5. Each package appears once (its first record), and the order
# is a deterministic shuffle (seed below) so that domains interleave.
# Usage: ops/make-prompts.sh [OUT] [SEED]     (default: prompts.jsonl 2026)
# Needs: apt-cache with package lists (runs `apt-get update`, with English
# translations, if they are missing), perl (part of every Debian system).
set -euo pipefail
out="${1:-prompts.jsonl}"
seed="${2:-2026}"

translations() {
  apt-get indextargets -o Acquire::Languages=en --format '$(FILENAME)' 'Identifier: Translations' |
    while read -r f; do [ -e "$f" ] && echo "$f"; done
}
if [ -z "$(apt-cache dumpavail 2>/dev/null | head -c 1)" ] || [ -z "$(translations)" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq -o Acquire::Languages=en ||
    echo "make-prompts: apt-get update failed; using the package lists there are" >&2
fi
long=$(mktemp)
trap 'rm -f "$long"' EXIT
for f in $(translations); do /usr/lib/apt/apt-helper cat-file "$f"; echo; done > "$long"
[ -s "$long" ] || echo "make-prompts: no Translation-en index; prompts get synopses only" >&2

apt-cache dumpavail | perl -e '
  use strict; use warnings;
  my ($seed, $long_file) = @ARGV;
  my (%seen, @rows, %rec, $field, %long);
  # Long descriptions by Description-md5 from the Translation-en index.
  open(my $lf, "<", $long_file) or die "make-prompts: $long_file: $!";
  my ($md5, $text) = (undef, undef);
  while (my $line = <$lf>) {
    chomp $line;
    if ($line eq "") { $long{$md5} = $text if defined $md5 && defined $text; ($md5, $text) = (undef, undef); next; }
    if ($line =~ /^Description-md5:\s*(\S+)/) { $md5 = $1; next; }
    if ($line =~ /^Description-en:/) { $text = ""; next; }
    $text .= "\n$line" if defined $text && $line =~ /^ /;
  }
  $long{$md5} = $text if defined $md5 && defined $text;
  close($lf);
  @ARGV = ();
  sub esc {
    my $s = shift;
    $s =~ s/\\/\\\\/g; $s =~ s/"/\\"/g;
    $s =~ s/([\x00-\x1f])/sprintf("\\u%04x", ord($1))/ge;
    return $s;
  }
  sub flush {
    if (defined $rec{Package} && defined $rec{Section} && defined $rec{Description}
        && !$seen{$rec{Package}}++) {
      my $d = $rec{Description};
      my $m = $rec{"Description-md5"};
      $d .= $long{$m} if defined $m && defined $long{$m} && $d !~ /\n/;
      my ($syn, $lt) = split(/\n/, $d, 2);
      $lt = "" unless defined $lt;
      for ($d, $syn, $lt) {
        s/\n \.\n/\n/g; s/\s+/ /g; s/^ | $//g; $_ = substr($_, 0, 2000);
      }
      (my $sec = $rec{Section}) =~ s{.*/}{};
      push @rows, sprintf("{\"id\":\"%s\",\"text\":\"%s\",\"synopsis\":\"%s\",\"long\":\"%s\",\"domain\":\"%s\"}",
                          esc($rec{Package}), esc($d), esc($syn), esc($lt), esc($sec));
    }
    %rec = (); $field = undef;
  }
  while (my $line = <STDIN>) {
    chomp $line;
    if ($line eq "") { flush(); next; }
    if ($line =~ /^ (.*)$/) {
      $rec{$field} .= "\n $1" if defined $field && $field eq "Description";
      next;
    }
    if ($line =~ /^([A-Za-z0-9-]+):\s*(.*)$/) { $field = $1; $rec{$1} = $2; }
  }
  flush();
  srand($seed);
  for (my $i = $#rows; $i > 0; $i--) {
    my $j = int(rand($i + 1));
    @rows[$i, $j] = @rows[$j, $i];
  }
  print "$_\n" for @rows;
' "$seed" "$long" > "$out.tmp"
mv "$out.tmp" "$out"
echo "make-prompts: $(wc -l < "$out") prompts in $out ($(grep -o '"domain":"[^"]*"}$' "$out" | sort -u | wc -l) domains)" >&2
