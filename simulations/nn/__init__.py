"""DP-SGD on real networks (PyTorch): engine, sampling, pruning masks, diagnostics, Hessian, training.

==================  ==================================================================================
module              job
==================  ==================================================================================
``engine``          per-sample gradients (book-keeping / torch.func vmap / loop reference), flat
                    clipping, Gaussian noise on the sum, division by the expected batch size
``sampler``         Poisson subsampling (the batch model the accountant assumes)
``masks``           magnitude-pruning masks (global / layer-wise)
``diagnostics``     per-step statistics: clipped fraction, norm quantiles, clip bias, cosine
``hessian``         Hessian-vector products, top-k eigenvalues (Lanczos), effective rank, projections
``train``           ``TrainConfig``, ``train`` (history dict), ``run_train`` (result folder), resume
``data``/``models``  datasets and networks
==================  ==================================================================================

Privacy accounting itself lives in ``dptheory.privacy`` (delegated to dp-accounting).
"""
