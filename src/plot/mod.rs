//! Charts as SVG or PNG (chosen by the output file's extension): lines, histograms, contours, heat maps,
//! trajectories. Takes plain data, never the store.
