"""Units of the physics code: geometry is in millimetres, attenuation data in centimetres
(cm^2/g, g/cm^3, g/cm^2), so every crossing between the two goes through this one factor."""

MM_PER_CM = 10.0
