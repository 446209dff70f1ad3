"""Rest-frame (vacuum) wavelengths in Å of the spectral features the mock survey draws.

Values follow the SDSS/DESI line lists (vacuum, as both surveys' wavelengths are).
"""

from __future__ import annotations

C_KMS = 299_792.458

# Hydrogen
LYMAN_LIMIT = 911.75
LY_BETA = 1025.72
LY_ALPHA = 1215.67
BALMER_LIMIT = 3646.0
H_ALPHA = 6564.61
H_BETA = 4862.68
H_GAMMA = 4341.68
H_DELTA = 4102.89
H_EPSILON = 3971.20
H_8 = 3890.15
H_9 = 3836.47
H_10 = 3798.98
BALMER_SERIES = (H_ALPHA, H_BETA, H_GAMMA, H_DELTA, H_EPSILON, H_8, H_9, H_10)

# Quasar broad lines and their typical rest equivalent widths (Å) and FWHM (km/s),
# after the SDSS quasar composite (Vanden Berk et al. 2001).
OVI = 1033.82
NV = 1240.14
SIIV = 1399.80  # Si IV + O IV] blend
CIV = 1549.06
HEII = 1640.42
ALIII = 1857.40
CIII = 1908.73
MGII = 2799.49
QSO_BROAD = (
    # (rest λ, EW, FWHM)
    (OVI, 12.0, 5000.0),
    (LY_ALPHA, 75.0, 4500.0),
    (NV, 18.0, 4000.0),
    (SIIV, 9.0, 5500.0),
    (CIV, 30.0, 5000.0),
    (HEII, 2.5, 4000.0),
    (CIII, 20.0, 6000.0),
    (MGII, 33.0, 4500.0),
    (H_DELTA, 5.0, 4000.0),
    (H_GAMMA, 13.0, 4000.0),
    (H_BETA, 50.0, 4200.0),
    (H_ALPHA, 210.0, 3600.0),
)

# Forbidden (narrow) lines
OII_3726 = 3727.09
OII_3729 = 3729.88
NEIII_3869 = 3870.16
OIII_4959 = 4960.30
OIII_5007 = 5008.24
HEI_5876 = 5877.25
NII_6548 = 6549.86
NII_6583 = 6585.27
SII_6716 = 6718.29
SII_6731 = 6732.67
# Atomic physics fixes these doublet ratios (same upper level).
OIII_RATIO = 2.98  # [O III] 5007 / 4959
NII_RATIO = 2.95  # [N II] 6583 / 6548
# Case B recombination, T = 10^4 K
CASE_B_HA_HB = 2.86
CASE_B_HG_HB = 0.468
CASE_B_HD_HB = 0.259

# Stellar absorption
CAII_K = 3934.78
CAII_H = 3969.59
G_BAND = 4305.6
MG_B = 5176.7
FE_5270 = 5271.0
FE_5335 = 5336.0
NA_D = 5895.6
CA_TRIPLET = (8500.36, 8544.44, 8664.52)
# TiO band heads of M dwarfs (absorption sets in at the head, fades redward)
TIO_HEADS = (4762.0, 4955.0, 5168.0, 5449.0, 5848.0, 6160.0, 6653.0, 7056.0, 7591.0, 8434.0)
