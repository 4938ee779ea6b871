# Plots of one or more training runs (coe-plot, docs/training.md#watching-a-run). coe-plot runs it
# without a shell, as the argument vector
#   gnuplot -c tools/plot_run.gp DIR SUFFIX N TITLES VAL_RUNS HEATMAPS SMOOTHING SKIP
# DIR holds the data coe-plot wrote: train-<i>.dat (step loss loss_ema lr grad_norm tokens_per_s
# aux_loss tokens_per_s_ema) for runs i = 1..N, val-<i>.dat (step val_loss) for each run index in the
# space-separated VAL_RUNS, expert_load-<i>.dat (a matrix with row and column headers: load / mean load per layer/iteration
# and expert) for each run index in the space-separated HEATMAPS. TITLES are the runs' legend names
# joined by newlines; SMOOTHING is the EMA weight of the loss_ema column; SKIP names (space-separated)
# the curves among loss, lr, grad_norm and tokens_per_s that no run logged, which are not drawn. Writes DIR/loss.png,
# val_loss.png (when VAL_RUNS is not empty), lr.png, grad_norm.png, tokens_per_s.png and
# expert_load-<i>.png, each name followed by SUFFIX (coe-plot renames the finished files). Needs
# gnuplot >= 5.2 with the pngcairo terminal (Debian 12: gnuplot-nox).
#
# The arguments arrive as the strings ARG1..ARG8 and are used only as data (file names, titles):
# never put them into a command line (`eval`, `@macro`, `system`), where they would run as
# gnuplot commands. gnuplot opens a data file named '<...' and an output named '|...' through a
# shell, so DIR must be absolute.
if (ARGC != 8) {
  print "usage: gnuplot -c plot_run.gp DIR SUFFIX N TITLES VAL_RUNS HEATMAPS SMOOTHING SKIP"
  exit status 2
}
dir = ARG1
suffix = ARG2
n = int(ARG3)
val_runs = ARG5
heatmaps = ARG6
smoothing = ARG7
skip = " " . ARG8 . " "
draws(name) = strstrt(skip, " " . name . " ") == 0
if (dir[1:1] ne "/") {
  print "plot_run.gp: DIR must be an absolute path"
  exit status 2
}
if (n < 1) {
  print "plot_run.gp: N must be at least 1"
  exit status 2
}
array title_of[n]
rest = ARG4
do for [i=1:n] {
  cut = strstrt(rest, "\n")
  if (cut > 0) {
    title_of[i] = rest[1:cut-1]
    rest = rest[cut+1:]
  } else {
    title_of[i] = rest
    rest = ""
  }
}
# Ten distinguishable colours; a run's raw loss is its colour, half transparent.
colours = "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf"
colour(i) = "#" . word(colours, (i - 1) % 10 + 1)
faint(i) = "#90" . word(colours, (i - 1) % 10 + 1)
train(i) = dir . "/train-" . i . ".dat"
out(name) = dir . "/" . name . ".png" . suffix

set terminal pngcairo size 900,540 noenhanced font ",11"
set datafile missing "?"
set grid
set key top right
set xlabel "step"

if (draws("loss")) {
  set output out("loss")
  set title "training loss (thin: every step; thick: EMA, weight " . smoothing . ")"
  set ylabel "loss"
  plot for [i=1:n] train(i) using 1:2 with lines linewidth 1 linecolor rgb faint(i) notitle, \
       for [i=1:n] train(i) using 1:3 with lines linewidth 2.5 linecolor rgb colour(i) title title_of[i]
  unset output
}

if (strlen(val_runs) > 0) {
  set output out("val_loss")
  set title "validation loss"
  set ylabel "validation loss"
  plot for [k in val_runs] dir . "/val-" . k . ".dat" using 1:2 with linespoints pointsize 0.7 linewidth 2 \
       linecolor rgb colour(int(k)) title title_of[int(k)]
  unset output
}

# The noisier curves keep their legend outside the plot.
set key outside right top

if (draws("lr")) {
  set output out("lr")
  set title "learning rate"
  set ylabel "lr"
  set format y "%.1e"
  plot for [i=1:n] train(i) using 1:4 with lines linewidth 2 linecolor rgb colour(i) title title_of[i]
  unset output
}
set format y "% h"

if (draws("grad_norm")) {
  set output out("grad_norm")
  set title "gradient norm before clipping (log scale)"
  set ylabel "grad norm"
  set logscale y
  plot for [i=1:n] train(i) using 1:5 with lines linewidth 1.5 linecolor rgb colour(i) title title_of[i]
  unset output
}
unset logscale y

# Throughput as the loss: thin every step, thick the moving average; the legend inside, bottom
# right, clear of the curves near the top.
set key inside bottom right
if (draws("tokens_per_s")) {
  set output out("tokens_per_s")
  set title "training throughput (thin: every step; thick: EMA, weight " . smoothing . ")"
  set ylabel "tokens/s"
  set yrange [0:*]
  plot for [i=1:n] train(i) using 1:6 with lines linewidth 1 linecolor rgb faint(i) notitle, \
       for [i=1:n] train(i) using 1:8 with lines linewidth 2.5 linecolor rgb colour(i) title title_of[i]
  unset output
}
set autoscale y

# Expert load: one heatmap per run, experts across, layer/iteration down (layer 0 on top); white is
# the mean load, blue less, red more (the scale reaches at least 2x the mean).
set cblabel "load / mean load"
set xlabel "expert"
set ylabel "layer / CoE iteration"
set yrange [*:*] reverse
set xtics out nomirror
set ytics out nomirror
unset grid
unset key
do for [k in heatmaps] {
  matrix_file = dir . "/expert_load-" . k . ".dat"
  stats matrix_file matrix rowheaders columnheaders using 3 nooutput
  top = STATS_max > 2 ? STATS_max : 2
  set cbrange [0:top]
  set palette defined (0 "#2166ac", 1 "#f7f7f7", top "#b2182b")
  set output out("expert_load-" . k)
  set title "expert load: " . title_of[int(k)]
  plot matrix_file matrix rowheaders columnheaders using 1:2:3 with image
  unset output
}
