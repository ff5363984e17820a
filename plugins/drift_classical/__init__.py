"""drift_classical: correlators, sub-pixel estimators and denoisers (built-in plugin).

Presets: ``classical`` (NCC → Newton refinement over the overlap, of Poisson
counts after the Anscombe transform; the most accurate), ``distorted`` (NCC →
centre of symmetry of the peak, for vibrating or jittery scans), ``phase``
(phase correlation → upsampled DFT), ``ncc-peak`` (NCC → 3-point parabola),
``skimage`` (scikit-image ``phase_cross_correlation``, the reference).
"""
from __future__ import annotations

from drift_framework import Component, Param, Preset, hookimpl

__version__ = "0.1.0"

_MAX_SHIFT = Param("float", None, "Search the peak within this radius of zero shift (px)", gt=0, nullable=True)
_WINDOW = Param("str", "tukey", "Apodization window", choices=("none", "hann", "tukey"))
_ALPHA = Param("float", 0.25, "Tukey taper fraction", ge=0, le=1)


def _xcorr(normalize):
    def factory(p, ctx):
        from .correlators import CrossCorrelator

        return CrossCorrelator(normalize=normalize, window=p["window"], tukey_alpha=p["tukey_alpha"], pad=p["pad"],
                               overlap_normalize=p.get("overlap_normalize", False),
                               kind="ncc" if normalize else "xcorr")
    return factory


def _phase(p, ctx):
    from .correlators import PhaseCorrelator

    return PhaseCorrelator(window=p["window"], tukey_alpha=p["tukey_alpha"])


def _images(p, ctx):
    from .correlators import ImagePair

    return ImagePair()


@hookimpl
def drift_correlators():
    common = {"window": _WINDOW, "tukey_alpha": _ALPHA,
              "pad": Param("bool", False, "Zero-pad to a linear (non-circular) correlation"),
              "lowpass_px": Param("float", None, "Gaussian weighting of the cross-spectrum, px (matched to the "
                                                 "atoms; null: none)", gt=0, nullable=True)}
    return [
        Component("xcorr", _xcorr(False), common, "Zero-mean FFT cross-correlation"),
        Component("ncc", _xcorr(True), {**common, "overlap_normalize": Param(
            "bool", True, "With pad: normalize each lag over the overlap (masked NCC)")},
                  "Normalized cross-correlation (coefficient −1…1)"),
        Component("phase", _phase, {"window": Param("str", "none", "Apodization window",
                                                     choices=("none", "hann", "tukey")), "tukey_alpha": _ALPHA},
                  "Phase correlation (whitened cross-power spectrum)"),
        Component("images", _images, {}, "No correlation: passes the images to an image-based estimator"),
    ]


def _estimator(cls_name, **extra_keys):
    def factory(p, ctx):
        from . import estimators

        return getattr(estimators, cls_name)(**p)
    return factory


def _skimage(p, ctx):
    from .skimage_ref import SkimagePhaseCrossCorrelation

    return SkimagePhaseCrossCorrelation(**p)


@hookimpl
def drift_estimators():
    base = {"max_shift_px": _MAX_SHIFT}
    return [
        Component("peak", _estimator("MapEstimator"), base, "Integer peak of the correlation map"),
        Component("parabolic", _estimator("Parabolic"), base, "3-point parabolic fit per axis"),
        Component("gaussian", _estimator("Gaussian3"), base, "3-point Gaussian fit per axis"),
        Component("centroid", _estimator("Centroid"),
                  {**base, "radius_px": Param("int", 1, "Neighbourhood half-size", ge=1, le=10)},
                  "Centre of mass around the peak"),
        Component("symmetry-center", _estimator("SymmetryCenter"),
                  {**base, "radius_px": Param("float", 8.0, "Radius of the disk the centroid is taken over (px)",
                                              ge=1, le=64),
                   "iterations": Param("int", 200, "Most centroid iterations", ge=1, le=10000)},
                  "Centre of symmetry of the correlation peak (mean displacement; for vibrating or jittery scans)"),
        Component("upsampled-dft", _estimator("UpsampledDFT"),
                  {**base, "upsample_factor": Param("int", 100, "Samples per pixel", ge=1, le=10000)},
                  "Upsampled-DFT refinement (Guizar-Sicairos 2008)"),
        Component("gauss-newton", _estimator("GaussNewton"),
                  {**base, "taper_px": Param("float", 8.0, "Smooth taper width at the overlap's edge", ge=0),
                   "noisy_taper_px": Param("float", 2.0, "Where the first pass's noise is beyond the sharper "
                                           "pass's reach, refined again under this taper: more of the overlap's "
                                           "information, its sharp edge's bias buried in that noise (null: never)",
                                           ge=0, nullable=True),
                   "noisy_lowpass_px": Param("float", 1.5, "The low-pass of that second refinement (px; null: none)",
                                             gt=0, nullable=True),
                   "iterations": Param("int", 12, "Newton iterations", ge=1, le=100),
                   "margin_px": Param("int", 3, "Border kept beyond the initial shift (the Newton steps' room)",
                                      ge=2, le=32),
                   "lowpass_px": Param("float", 2.0, "Gaussian weighting of the cross-spectrum (px; null: none)",
                                       gt=0, nullable=True),
                   "fine_lowpass_px": Param("float", 1.0, "A second, sharper pass with the exact energy term: its "
                                            "weighting (px, below lowpass_px; null: no second pass)", gt=0, nullable=True),
                   "fine_test": Param("float", 6.0, "The second pass's answer is taken when it moves by more "
                                      "than this χ² (2 d.o.f.) of its own covariance", ge=0),
                   "fine_by_error": Param("bool", True, "Take the second pass's answer also when its move (the "
                                          "first pass's bias, at high doses) costs more than its extra noise; "
                                          "off for resampled templates, whose blur it would read as that bias"),
                   "stabilize_counts": Param("bool", True, "Refine frames of Poisson counts after the Anscombe "
                                             "transform: each pixel weighed by its variance, as the likelihood "
                                             "does"),
                   "content_weight": Param("bool", True, "Weigh the reference's spectrum by its content's "
                                           "signal-to-noise (a Wiener filter from both frames' power): the noise "
                                           "between a lattice's reflections stays out of the correlation")},
                  "Newton refinement of the correlation over the overlap (near the Cramér–Rao bound)"),
        Component("skimage", _skimage,
                  {**base, "upsample_factor": Param("int", 100, "Samples per pixel", ge=1),
                   "normalization": Param("str", "phase", "phase or none", choices=("phase", "none"))},
                  "scikit-image phase_cross_correlation (reference; needs correlator: images)"),
    ]


def _denoiser(cls_name, *keys):
    def factory(p, ctx):
        from . import denoisers

        return getattr(denoisers, cls_name)(*(p[k] for k in keys))
    return factory


def _anscombe(p, ctx):
    from .counts import CountStabilizer

    return CountStabilizer(p["counts_per_unit"])


def _bragg(p, ctx):
    from .denoisers import BraggFilter

    return BraggFilter(**p)


@hookimpl
def drift_denoisers():
    return [
        Component("none", _denoiser("NoDenoiser"), {}, "No denoising"),
        Component("anscombe", _anscombe,
                  {"counts_per_unit": Param("float", None, "Counts per unit of the frames (the detector's "
                                            "calibration); null: transform frames that look like counts "
                                            "(non-negative integers, noise variance ≈ mean), leave others alone",
                                            gt=0, nullable=True)},
                  "Anscombe transform 2√(x + 3/8) of Poisson counts: unit noise variance, so least squares weighs "
                  "every pixel as the Poisson likelihood does"),
        Component("gaussian", _denoiser("GaussianDenoiser", "sigma_px"),
                  {"sigma_px": Param("float", 1.0, "Gaussian std", gt=0)}, "Gaussian blur"),
        Component("median", _denoiser("MedianDenoiser", "size_px"),
                  {"size_px": Param("int", 3, "Window size", ge=1, le=99)}, "Median filter"),
        Component("bragg", _bragg,
                  {"threshold": Param("float", 8.0, "Peak height over the band median", gt=1),
                   "radius_px": Param("float", 2.0, "Mask radius around each peak (frequency px)", gt=0),
                   "max_peaks": Param("int", 64, "Most peaks kept", ge=1)},
                  "Lattice-aware Fourier band-pass: keeps the Bragg peaks"),
    ]


@hookimpl
def drift_presets():
    return [
        Preset("classical", {"denoiser": {"plugin": "none"}, "correlator": {"plugin": "ncc", "lowpass_px": 1.5,
                                                                                  "window": "none"},
                             "estimator": {"plugin": "gauss-newton"}},
               "NCC → Newton refinement over the overlap: the most accurate classical pipeline"),
        Preset("distorted", {"denoiser": {"plugin": "none"}, "correlator": {"plugin": "ncc", "window": "tukey"},
                             "estimator": {"plugin": "symmetry-center", "radius_px": 8.0}},
               "NCC → centre of symmetry of the peak: for scans with vibration or line jitter, whose correlation "
               "peaks are smeared or split; measurements add up around loops of frames"),
        Preset("phase", {"denoiser": {"plugin": "none"}, "correlator": {"plugin": "phase", "window": "tukey"},
                         "estimator": {"plugin": "upsampled-dft", "upsample_factor": 100}},
               "Phase correlation → upsampled DFT"),
        Preset("ncc-peak", {"denoiser": {"plugin": "none"}, "correlator": {"plugin": "ncc"},
                            "estimator": {"plugin": "parabolic"}},
               "NCC → 3-point parabolic fit"),
        Preset("skimage", {"denoiser": {"plugin": "none"}, "correlator": {"plugin": "images"},
                           "estimator": {"plugin": "skimage", "normalization": "phase"}},
               "scikit-image phase_cross_correlation (reference)"),
        Preset("skimage-none", {"denoiser": {"plugin": "none"}, "correlator": {"plugin": "images"},
                                "estimator": {"plugin": "skimage", "normalization": "none"}},
               "scikit-image phase_cross_correlation, normalization=None (reference)"),
    ]
