profile: {name: too-far}
parameters:
  vasopressin_start_norepinephrine_mcg_kg_min: 0.8
  vasopresin_units: 1
