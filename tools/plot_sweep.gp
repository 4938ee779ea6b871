# Plots of a coe-sweep run (docs/sweeps.md). coe-sweep runs it without a shell, as the argument
# vector
#   gnuplot -c tools/plot_sweep.gp DATADIR VAL_PNG RELATIVE_PNG NAMES BASELINE TITLE HAS_MEASURED
# reading DATADIR/val-<variant>.dat (step val_loss) for each of the space-separated NAMES and
# DATADIR/bars.dat (variant params% active% memory_estimate% memory_measured%, relative to
# BASELINE), and writing VAL_PNG and RELATIVE_PNG; HAS_MEASURED is 1 when bars.dat has measured
# memory. Needs gnuplot with the pngcairo terminal (gnuplot-nox).
#
# The arguments arrive as the strings ARG1..ARG7 and are used only as data (file names, titles):
# never put them into a command line (`eval`, `@macro`, `system`), where they would run as
# gnuplot commands. gnuplot opens a data file named '<...' and an output named '|...' through a
# shell, so the paths must be absolute.
if (ARGC != 7) {
  print "usage: gnuplot -c plot_sweep.gp DATADIR VAL_PNG RELATIVE_PNG NAMES BASELINE TITLE HAS_MEASURED"
  exit status 2
}
datadir = ARG1
val_png = ARG2
relative_png = ARG3
names = ARG4
baseline = ARG5
title_text = ARG6
has_measured = (ARG7 eq "1")
if (datadir[1:1] ne "/" || val_png[1:1] ne "/" || relative_png[1:1] ne "/") {
  print "plot_sweep.gp: DATADIR, VAL_PNG and RELATIVE_PNG must be absolute paths"
  exit status 2
}

set terminal pngcairo size 1100,650 noenhanced font ",11"
set datafile missing "?"
set grid

if (strlen(names) > 0) {
  set output val_png
  set title title_text.': validation loss'
  set xlabel 'step'
  set ylabel 'validation loss'
  set key outside right top
  plot for [n in names] datadir.'/val-'.n.'.dat' using 1:2 with linespoints pointsize 0.6 linewidth 2 title n
  unset output
}

set output relative_png
set title title_text.': relative to '.baseline.' (100% = '.baseline.')'
set xlabel ''
set ylabel '% of '.baseline
set key outside right top
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -25 scale 0
set yrange [0:*]
if (has_measured) {
  plot datadir.'/bars.dat' using 2:xtic(1) title 'parameters', \
       '' using 3 title 'active params/token', \
       '' using 4 title 'memory (estimate)', \
       '' using 5 title 'memory (measured)', \
       100 with lines dashtype 2 linecolor 'black' notitle
} else {
  plot datadir.'/bars.dat' using 2:xtic(1) title 'parameters', \
       '' using 3 title 'active params/token', \
       '' using 4 title 'memory (estimate)', \
       100 with lines dashtype 2 linecolor 'black' notitle
}
unset output
