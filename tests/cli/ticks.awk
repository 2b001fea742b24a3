# Reads axis tick values, one a line (the y ticks of both panels, in order); fails unless each panel's
# consecutive ticks are the same step apart and that step is 1, 2 or 5 times a power of ten.
function mant(d,   i) {
  for (i = 0; i < 40 && d < 1; i++) d *= 10
  for (i = 0; i < 40 && d >= 10; i++) d /= 10
  return d
}
NR > 1 && $1 > p {
  d = $1 - p
  m = mant(d)
  if (!((m > 0.999 && m < 1.001) || (m > 9.99) || (m > 1.999 && m < 2.001) || (m > 4.999 && m < 5.001))) bad = 1
  if (step != "" && (d - step > step * 1e-6 || step - d > step * 1e-6)) bad = 1
  step = d
  n++
}
NR > 1 && $1 <= p { step = "" } # the next panel starts
{ p = $1 }
END { exit bad || n < 3 }
