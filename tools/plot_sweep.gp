# Plots of a coe-sweep run (docs/sweeps.md). coe-sweep runs it without a shell, as the argument
# vector
#   gnuplot -c tools/plot_sweep.gp DATADIR VAL_PNG RELATIVE_PNG NAMES COLOURS BASELINE TITLE HAS_MEASURED
# reading DATADIR/val-<variant>.dat (step, mean val_loss over the variant's runs, low and high of
# its 95% interval, runs) for each of the space-separated NAMES, drawn in the palette colours of the
# space-separated COLOURS (1-based, one per name: the variant's place in the sweep file, so that a
# variant keeps its colour here and in coe-plot), and DATADIR/bars.dat (variant params% active%
# memory_estimate% memory_measured%, relative to BASELINE), and writing VAL_PNG and RELATIVE_PNG;
# HAS_MEASURED is 1 when bars.dat has measured memory. Needs gnuplot with the pngcairo terminal
# (gnuplot-nox).
#
# The arguments arrive as the strings ARG1..ARG8 and are used only as data (file names, titles):
# never put them into a command line (`eval`, `@macro`, `system`), where they would run as
# gnuplot commands. gnuplot opens a data file named '<...' and an output named '|...' through a
# shell, so the paths must be absolute.
if (ARGC != 8) {
  print "usage: gnuplot -c plot_sweep.gp DATADIR VAL_PNG RELATIVE_PNG NAMES COLOURS BASELINE TITLE HAS_MEASURED"
  exit status 2
}
datadir = ARG1
val_png = ARG2
relative_png = ARG3
names = ARG4
colour_slots = ARG5
baseline = ARG6
title_text = ARG7
has_measured = (ARG8 eq "1")
if (datadir[1:1] ne "/" || val_png[1:1] ne "/" || relative_png[1:1] ne "/") {
  print "plot_sweep.gp: DATADIR, VAL_PNG and RELATIVE_PNG must be absolute paths"
  exit status 2
}

# The palette of plot_run.gp (coe-plot): variant k of the sweep file has colour k in both.
colours = "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf"
colour(i) = "#" . word(colours, (i - 1) % 10 + 1)
slot(k) = int(word(colour_slots, k))

set terminal pngcairo size 1100,650 noenhanced font ",11"
set datafile missing "?"
set grid

if (strlen(names) > 0) {
  set output val_png
  set title title_text.': validation loss (line: the mean over a variant''s runs; band: its 95% interval, with seeds)'
  set xlabel 'step'
  set ylabel 'validation loss'
  set key inside right top
  set style fill transparent solid 0.2 noborder
  plot for [k=1:words(names)] datadir.'/val-'.word(names, k).'.dat' using 1:3:4 with filledcurves \
         linecolor rgb colour(slot(k)) notitle, \
       for [k=1:words(names)] datadir.'/val-'.word(names, k).'.dat' using 1:2 with linespoints pointsize 0.6 \
         linewidth 2 linecolor rgb colour(slot(k)) title word(names, k)
  unset output
}

# Bars show the difference from the baseline (0 = the baseline's), so that a few per cent stand out.
set output relative_png
set title title_text.': relative to '.baseline
set xlabel ''
set ylabel 'difference from '.baseline.' (%)'
set key outside right top
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -25 scale 0
set autoscale y
set xzeroaxis linetype -1 linewidth 1
if (has_measured) {
  plot datadir.'/bars.dat' using ($2-100):xtic(1) title 'parameters', \
       '' using ($3-100) title 'active params/token', \
       '' using ($4-100) title 'memory (estimate)', \
       '' using ($5-100) title 'memory (measured)'
} else {
  plot datadir.'/bars.dat' using ($2-100):xtic(1) title 'parameters', \
       '' using ($3-100) title 'active params/token', \
       '' using ($4-100) title 'memory (estimate)'
}
unset output
