# Plots of a coe-sweep run (docs/sweeps.md). coe-sweep calls it with
#   gnuplot -e "datadir='OUT/plots'; outdir='OUT'; names='a b c'; baseline='a'; title_text='sweep'; has_measured=0" \
#     tools/plot_sweep.gp
# reading OUT/plots/val-<variant>.dat (step val_loss) and OUT/plots/bars.dat
# (variant params% active% memory_estimate% memory_measured%, relative to the baseline), and writes
# OUT/val_loss.png and OUT/relative.png. Needs gnuplot with the pngcairo terminal (gnuplot-nox).
set terminal pngcairo size 1100,650 noenhanced font ",11"
set datafile missing "?"
set grid

if (strlen(names) > 0) {
  set output outdir.'/val_loss.png'
  set title title_text.': validation loss'
  set xlabel 'step'
  set ylabel 'validation loss'
  set key outside right top
  plot for [n in names] datadir.'/val-'.n.'.dat' using 1:2 with linespoints pointsize 0.6 linewidth 2 title n
  unset output
}

set output outdir.'/relative.png'
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
