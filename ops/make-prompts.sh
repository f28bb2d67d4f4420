#!/usr/bin/env bash
# Builds prompts.jsonl from Debian's package descriptions: real text that no
# one here wrote. One JSON object per line: {"id", "text", "domain"} where
#   id     = package name,
#   text   = the package's Description (synopsis and long text, paragraph
#            markers " ." removed, whitespace collapsed, cut at 2000 bytes),
#   domain = its Section without an archive area prefix ("contrib/games" -> "games").
# Each package appears once (its first record in `apt-cache dumpavail`), and the
# order is a deterministic shuffle (seed below) so that domains interleave.
# Usage: ops/make-prompts.sh [OUT] [SEED]     (default: prompts.jsonl 2026)
# Needs: apt-cache with package lists (runs `apt-get update` if there are none),
# perl (part of every Debian system).
set -euo pipefail
out="${1:-prompts.jsonl}"
seed="${2:-2026}"

if [ -z "$(apt-cache dumpavail 2>/dev/null | head -c 1)" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
fi

apt-cache dumpavail | perl -e '
  use strict; use warnings;
  my $seed = shift @ARGV;
  my (%seen, @rows, %rec, $field);
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
      $d =~ s/\n \.\n/\n/g; $d =~ s/\s+/ /g; $d =~ s/^ | $//g;
      $d = substr($d, 0, 2000);
      (my $sec = $rec{Section}) =~ s{.*/}{};
      push @rows, sprintf("{\"id\":\"%s\",\"text\":\"%s\",\"domain\":\"%s\"}",
                          esc($rec{Package}), esc($d), esc($sec));
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
' "$seed" > "$out.tmp"
mv "$out.tmp" "$out"
echo "make-prompts: $(wc -l < "$out") prompts in $out ($(cut -d'"' -f12 "$out" | sort -u | wc -l) domains)" >&2
