//! Curvature and sharpness: Lanczos for Hessian extremes, Hutchinson's trace, stochastic Lanczos
//! quadrature, and the sharpness measures (Keskar ε-sharpness, SAM, ASAM, filter-normalized loss rise).
