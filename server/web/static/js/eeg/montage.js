// Montages computed in the browser from the channels a stream has.
//
// A montage is a list of derivations {label, plus, minus}: plus a channel
// index, minus a channel index, "avg" (the average of the EEG channels) or
// null (as recorded, against the recording reference). Bipolar chains keep
// only the pairs whose two electrodes are present; the new names of the
// temporal electrodes (T7, T8, P7, P8) stand for the old ones (T3, T4, T5, T6).

export const MONTAGES = ["referential", "average", "longitudinal", "transverse"];

const LONGITUDINAL = [
  ["Fp1", "F7"], ["F7", "T3"], ["T3", "T5"], ["T5", "O1"],
  ["Fp2", "F8"], ["F8", "T4"], ["T4", "T6"], ["T6", "O2"],
  ["Fp1", "F3"], ["F3", "C3"], ["C3", "P3"], ["P3", "O1"],
  ["Fp2", "F4"], ["F4", "C4"], ["C4", "P4"], ["P4", "O2"],
  ["Fz", "Cz"], ["Cz", "Pz"],
];

const TRANSVERSE = [
  ["Fp1", "Fp2"],
  ["F7", "F3"], ["F3", "Fz"], ["Fz", "F4"], ["F4", "F8"],
  ["A1", "T3"], ["T3", "C3"], ["C3", "Cz"], ["Cz", "C4"], ["C4", "T4"], ["T4", "A2"],
  ["T5", "P3"], ["P3", "Pz"], ["Pz", "P4"], ["P4", "T6"],
  ["O1", "O2"],
];

const ALIASES = { T7: "T3", T8: "T4", P7: "T5", P8: "T6" };

/** The 10-20 name of a channel label ("EEG Fp1-REF" -> "Fp1"), or the label trimmed. */
function electrode(label) {
  const bare = label.trim().replace(/^EEG\s+/i, "").replace(/[-\s](REF|LE|AV|A1A2|M1M2)$/i, "");
  const name = bare.charAt(0).toUpperCase() + bare.slice(1).toLowerCase(); // FP1 -> Fp1, CZ -> Cz
  return ALIASES[name] || name;
}

/**
 * The derivations of `montage` for stream metadata `meta`. A bipolar montage
 * with no pair present (e.g. non 10-20 labels) gives the referential one.
 */
export function derivations(meta, montage) {
  const eeg = [];
  const byName = new Map();
  meta.channels.forEach((c, i) => {
    if ((c.type || "EEG") === "EEG") {
      eeg.push(i);
      byName.set(electrode(c.label), i);
    }
  });
  const referential = meta.channels.map((c, i) => ({ label: c.label.trim(), plus: i, minus: null }));
  if (montage === "average") {
    return meta.channels.map((c, i) => ({
      label: eeg.includes(i) ? `${c.label.trim()}-Avg` : c.label.trim(),
      plus: i,
      minus: eeg.includes(i) ? "avg" : null,
    }));
  }
  const chain = montage === "longitudinal" ? LONGITUDINAL : montage === "transverse" ? TRANSVERSE : null;
  if (chain === null) return referential;
  const pairs = chain
    .filter(([a, b]) => byName.has(a) && byName.has(b))
    .map(([a, b]) => ({ label: `${a}-${b}`, plus: byName.get(a), minus: byName.get(b) }));
  if (!pairs.length) return referential;
  // the other signals (ECG, EOG ...) follow, as recorded
  const others = meta.channels
    .map((c, i) => ({ label: c.label.trim(), plus: i, minus: null }))
    .filter((d) => !eeg.includes(d.plus));
  return [...pairs, ...others];
}

/**
 * Fill `out` (one value per derivation) from the sample of physical values
 * at `data[at .. at + channels)`; `eeg` lists the EEG channel indices (for the
 * average reference).
 */
export function derive(derivs, data, at, eeg, out) {
  let avg = 0;
  if (derivs.some((d) => d.minus === "avg")) {
    for (const i of eeg) avg += data[at + i];
    avg /= eeg.length || 1;
  }
  for (let k = 0; k < derivs.length; k++) {
    const d = derivs[k];
    const v = data[at + d.plus];
    out[k] = d.minus === null ? v : d.minus === "avg" ? v - avg : v - data[at + d.minus];
  }
  return out;
}

/** The EEG channel indices of `meta`. */
export function eegChannels(meta) {
  return meta.channels.map((c, i) => ((c.type || "EEG") === "EEG" ? i : -1)).filter((i) => i >= 0);
}
