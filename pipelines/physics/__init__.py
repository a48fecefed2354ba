"""Physics-based X-rays from the exact voxel walk (docs/physics.md).

One walk per view gives the attenuation line integral and the hinge integrals that make each tissue
material's mass thickness exact (`materials`); instruments add their own analytic mass thicknesses
(`instruments`); tube spectra, attenuation and detector absorption come from spekpy and xraylib
(`tables`, the only module that calls them); `synthesis` turns mass thicknesses into a detector
image (spectrum, dose, detector, noise, blur, scatter, collimation, processing); `views` draws a
sample's parameters from the config and renders its views from that record.
"""
