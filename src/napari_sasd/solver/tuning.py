"""Tuned parameters of the solver, each with the measurement that set it."""

#: Default lambda, as a fraction of the largest data-motif correlation, and
#: its floor in multiples of the estimated noise level (normalised units).
AUTO_LAM_FRACTION = 0.1
AUTO_LAM_NOISE = 2.5
#: Two motifs this similar (shift-invariant) count as collapsed onto one shape.
COLLAPSE_SIMILARITY = 0.85
#: Default iterations: per early continuation stage, last lifted stage, polish
#: on the k x k support, amplitude refit (debias).
STAGE_ITERS = (8, 100, 30, 20)
#: The last stage: the activations brought to the optimum of the lasso with
#: the final motifs fixed and refitted, by ``napari_sasd.locate``'s working
#: set from the solve's own copies (``locate.exact_finish``), instead of the
#: whole-image refit (the last entry above, and of ``DIRECT_ITERS``).
#: 512^2, two motifs, seeds 0-2: recall against the truth 0.935/0.944/0.944
#: -> 0.946/0.961/0.959 (precision 1.000 -> 0.9996/1/1), a locate with the
#: solve's motifs agrees with its defects at P/R >= 0.985 (was 0.977-0.984),
#: and the solve takes 0.9x the time (the exact finish 0.06 s, the
#: whole-image refit 0.14-0.18 s). Progress budget: its rounds, about.
EXACT_FINISH = True
EXACT_FINISH_ROUNDS = 4
#: Polish and amplitude refit after a single motif learnt on a crop (or a
#: warm start), which go straight to the k x k support.
DIRECT_ITERS = (15, 10)
#: Activations-only iterations on the whole image before the polish, when the
#: motifs come from a crop, one motif / several (at most: stops on convergence).
#: Several motifs had no whole-image joint stage to settle them: with 16,
#: recall fell (0.80 instead of 0.88 at k = 16) and FeSe's defects were missed.
SETTLE_DIRECT = (16, 48)
#: The polish's activation step works on the pixels that can be non-zero
#: when they are at most this fraction of the grid (about 1 % at sensible
#: lambdas; 75 % at a hundredth of them, where the gathers made the solve
#: 1.05-1.2x slower than the dense step).
SPARSE_MAX_FRACTION = 0.25
#: Activation step: grows by this factor per iteration until backtracking
#: stops it, at most this many times the global 1/Lipschitz step.
BACKTRACK_GROW = 1.5
MAX_STEP_GAIN = 64.0
#: Motifs are discovered on a crop of ``DISCOVERY_SPAN * k * sqrt(n_motifs)``
#: pixels per side, within ``[DISCOVERY_MIN, DISCOVERY_SIZE]``: a hundred motif
#: areas per motif, a hundred-odd copies at the densities of interest. (A
#: cap of 256 left 3 motifs of k = 20 with ~80 copies each: one collapsed, at
#: 0.72 similarity, on 1024^2 seed 0; the 346 crop: 0.990 / 0.999 / 0.988.)
DISCOVERY_SPAN = 10
DISCOVERY_MIN = 128
DISCOVERY_SIZE = 384
#: Several motifs refined on the crop: further stages there (at most) while
#: re-centring still moves a motif by more than a pixel. The whole image's
#: k x k stages cannot move a motif, and one left off-centre loses its edge
#: and its copies' positions (1024^2, 3 motifs, k = 20, seed 1: one motif
#: 3 px off, similarity 0.988, recall 0.03 for it).
CROP_JOINT_MORE = 1
#: Several motifs: the crop is only used when it is at most this share of the image.
CROP_FRACTION = 0.5
#: Iterations of each discovery solve at the target lambda (at most: a stage
#: stops when it converges), several motifs / one. A single motif learnt on a
#: small crop needs the longer stage (k = 16 at 256^2: 7/10 seeds >= 0.99 with
#: 30, 10/10 with 100); it costs little on the crop.
DISCOVERY_FINAL = 30
DISCOVERY_FINAL_ONE = 100
#: Iterations of each earlier discovery stage (at most), where the motif only
#: follows lambda down: 0.95x the time of 8 at 256^2 with two motifs, quality
#: alike over the battery (45/52 seeds >= 0.99 either way).
DISCOVERY_EARLY = 6
#: A motif looks cut by its border (``_looks_cut``) when an outermost row
#: holds at least ``EDGE_HEAVY`` times a row's mean energy and the opposite
#: one at most ``EDGE_EMPTY`` times that.
EDGE_HEAVY = 0.25
EDGE_EMPTY = 0.05
#: Re-centring crops a lifted motif to the window nearest its energy centroid
#: among those that lose at most this share of its energy more than the best.
WINDOW_LOSS = 0.005
#: The whole image on the circular model: the pixels outside it are refilled
#: with the model every this many iterations (two transforms; 4 and 8 measured
#: alike at 256^2).
FILL_EVERY = 4
