"""The one audio pipeline of soundcl: decode, downmix, resample, normalise, crop.

Every recipe builds its data sets through :func:`make_dataset`, so every method
reads audio the same way:

* decode with ``soundfile`` (any bit depth, any channel count), downmix to mono;
* resample to ``sample_rate`` with one cached resampler per source rate;
* peak-normalise, leaving silent clips silent (no division by zero);
* training: a random crop of ``train_duration`` seconds; a shorter clip stays
  whole (``pad_short_crops: batch``, cssl_sound's: ``PaddedBatch`` pads it with a
  relative length < 1, so mean normalisation and pooling leave the padding out)
  or is zero-padded to the crop length (``dataset``: length 1). The crop offset
  is a pure function of (crop seed, clip id), so a resumed run, a run with
  data-loader workers and a DDP run draw the same crops;
* evaluation: the full clip; ``PaddedBatch`` gives SpeechBrain relative lengths.

Decoding and resampling are done once per clip when ``cache_folder`` is set:
the mono waveform at the target rate is stored as ``.npy`` and read back on
later fetches, so an epoch costs a file read instead of a decode plus a
resample; a clip is read per fetch and freed with its batch, so a corpus of
any size never sits in memory (bench/throughput.py measures both).
"""
import hashlib
import logging
import os
import zlib

import numpy as np
import soundfile as sf
import torch
import torchaudio

import speechbrain as sb

logger = logging.getLogger(__name__)


class AudioReadError(RuntimeError):
    """A clip that cannot be decoded, with the file named."""


#: Where a clip shorter than a training crop is padded (``pad_short_crops``).
PAD_SHORT_CROPS = ("batch", "dataset")


class AudioPipeline:
    """Loads clips as mono float waveforms at a fixed rate.

    Arguments
    ---------
    sample_rate : int
        Target sample rate in Hz.
    train_duration : float
        Length in seconds of the training crops.
    normalize : bool
        Peak-normalise each clip to a maximum absolute value of 1.
    cache_folder : str, optional
        Folder for decoded-and-resampled waveforms (``None``: no cache).
    crop_seed : int
        Seed mixed into each crop offset; :meth:`set_crop_seed` changes it per
        epoch so crops differ between epochs but not between reruns.
    pad_short_crops : str
        A clip shorter than a training crop: ``batch`` (cssl_sound's) keeps it whole,
        the batch pads it (relative length < 1); ``dataset`` zero-pads it here to
        the crop length (relative length 1: the padding enters the mean and the pooling).
    """

    def __init__(self, sample_rate=16000, train_duration=4.0, normalize=True, cache_folder=None, crop_seed=0,
                 pad_short_crops="batch"):
        if pad_short_crops not in PAD_SHORT_CROPS:
            raise ValueError(f"unknown pad_short_crops {pad_short_crops!r}: "
                             f"expected one of {', '.join(PAD_SHORT_CROPS)}")
        self.pad_short_crops = pad_short_crops
        self.sample_rate = int(sample_rate)
        self.train_duration = float(train_duration)
        self.normalize = normalize
        self.cache_folder = cache_folder
        self.crop_seed = int(crop_seed)
        self._resamplers = {}
        if cache_folder:
            os.makedirs(cache_folder, exist_ok=True)

    @property
    def train_samples(self):
        """Number of samples of a training crop."""
        return max(1, int(round(self.train_duration * self.sample_rate)))

    def set_crop_seed(self, seed):
        """Select the crops of the next pass (called at each epoch start)."""
        self.crop_seed = int(seed)

    def _resampler(self, source_rate):
        if source_rate not in self._resamplers:
            self._resamplers[source_rate] = torchaudio.transforms.Resample(source_rate, self.sample_rate)
        return self._resamplers[source_rate]

    def decode(self, path):
        """Read ``path``, downmix and resample it.

        Returns
        -------
        torch.Tensor, shape [n_samples], float32 at ``sample_rate``.
        """
        try:
            data, source_rate = sf.read(path, dtype="float32", always_2d=True)
        except Exception as err:  # soundfile raises several types for bad files
            raise AudioReadError(f"cannot read audio file {path}: {err}") from err
        if data.shape[0] == 0:
            raise AudioReadError(f"audio file {path} holds no samples")
        wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
        if not torch.isfinite(wav).all():
            raise AudioReadError(f"audio file {path} holds NaN or infinite samples")
        if source_rate != self.sample_rate:
            wav = self._resampler(source_rate)(wav.unsqueeze(0)).squeeze(0)
        return wav

    def _cache_path(self, path):
        stat = os.stat(path)
        key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{self.sample_rate}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return os.path.join(self.cache_folder, digest[:2], digest + ".npy")

    def load(self, path):
        """Decoded (from the cache when possible), peak-normalised waveform.

        Returns
        -------
        torch.Tensor, shape [n_samples], float32.
        """
        if self.cache_folder:
            cache_path = self._cache_path(path)
            try:
                cached = np.load(cache_path)
                wav = torch.from_numpy(cached if cached.dtype == np.float32 else cached.astype(np.float32))
            except (OSError, ValueError):
                wav = self.decode(path)
                os.makedirs(os.path.dirname(cache_path), exist_ok=True)
                # Write then rename: a process killed mid-write leaves no
                # truncated file that a later run would trust.
                tmp = f"{cache_path}.{os.getpid()}.tmp.npy"
                np.save(tmp, wav.numpy())
                os.replace(tmp, cache_path)
        else:
            wav = self.decode(path)
        if self.normalize:
            wav = peak_normalize(wav)
        return wav

    def crop_offset(self, clip_id, n_samples, view=0):
        """Deterministic random offset of crop ``view`` of ``clip_id``.

        View 0 is the usual training crop; views 1, 2 ... are further crops
        drawn independently (multi-view self-supervised training).
        """
        room = n_samples - self.train_samples
        if room <= 0:
            return 0
        key = f"{self.crop_seed}:{clip_id}" if view == 0 else f"{self.crop_seed}:{clip_id}:view{view}"
        draw = zlib.crc32(key.encode())
        return int(np.random.RandomState(draw).randint(0, room + 1))

    def train_crop(self, wav, clip_id, view=0):
        """Crop ``wav`` to ``train_samples`` samples; a shorter clip is returned whole
        (``pad_short_crops: batch``) or zero-padded to ``train_samples`` (``dataset``).

        Arguments
        ---------
        wav : torch.Tensor, shape [n_samples]
        clip_id : str
            Identity of the clip; with the crop seed and ``view`` it fixes the offset.
        view : int
            Index of the crop (0 for single-view training).

        Returns
        -------
        torch.Tensor, shape [train_samples] (or [n_samples] when shorter, ``batch``)
        """
        target = self.train_samples
        if wav.shape[0] < target:
            if self.pad_short_crops == "batch":
                return wav
            return torch.nn.functional.pad(wav, (0, target - wav.shape[0]))
        start = self.crop_offset(clip_id, wav.shape[0], view)
        return wav[start : start + target]


def peak_normalize(wav, eps=1e-8):
    """Scale ``wav`` to a peak of 1; a silent clip stays all zeros (never NaN)."""
    peak = wav.abs().max()
    if peak <= eps:
        return torch.zeros_like(wav)
    return wav / peak


class _DecodeEachClip(torch.utils.data.Dataset):
    """Clip ``i`` -> ``(ID, wav, error message or None)`` after one ``audio.load`` (fills the cache)."""

    def __init__(self, rows, audio):
        self.rows = rows
        self.audio = audio

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        row = self.rows[index]
        try:
            self.audio.load(row["wav"])
        except AudioReadError as err:
            return row["ID"], row["wav"], str(err)
        return row["ID"], row["wav"], None


def _as_is(item):
    return item


#: Clips decoded per worker task of the parallel pass.
DECODE_CHUNK = 16

#: Below this many clips the decode pass runs in the main process: starting
#: workers would cost more than it saves (and no progress bar is shown).
PARALLEL_CHECK_MIN_CLIPS = 200


def check_clips(rows, audio, on_bad_audio="error", report_path=None, extra_bad=(), num_workers=0,
                min_parallel_clips=PARALLEL_CHECK_MIN_CLIPS):
    """Decode every clip once; report or drop those that cannot be used.

    With a cache folder this pass is the cache fill, so training never decodes
    again. A clip is bad when it cannot be decoded, holds no samples, or holds
    NaN/inf samples; such a clip would otherwise crash a batch mid-epoch or
    turn the loss into NaN.

    Decoding and resampling every clip is the longest one-time wait of a run
    (bench/throughput.py measures it per 1000 clips), so with ``num_workers > 0``
    and at least ``min_parallel_clips`` clips it is spread over
    data-loader worker processes; each worker writes its cache files atomically,
    so the cache is the same as a sequential pass's. A progress bar with the
    estimated time left is shown from that many clips on.

    Arguments
    ---------
    rows : list of dict
        Manifest rows (``ID``, ``wav``).
    audio : AudioPipeline
    on_bad_audio : str
        ``error``: raise, listing the bad clips; ``skip``: return them to drop.
    report_path : str, optional
        CSV written with one line per bad clip (``ID,wav,reason``).
    extra_bad : sequence of str
        Files already found unreadable (e.g. by data preparation), added to the report.
    num_workers : int
        Worker processes of the decode pass (0: the main process).
    min_parallel_clips : int
        Fewer clips than this are decoded in the main process whatever ``num_workers``.

    Returns
    -------
    set of the IDs of bad clips.
    """
    from tqdm import tqdm

    unique = list({row["ID"]: row for row in rows}.values())
    decoder = _DecodeEachClip(unique, audio)
    if num_workers > 0 and len(unique) >= min_parallel_clips:
        # Chunks of clips per worker task: one inter-process hand-over per chunk, not per clip.
        chunks = torch.utils.data.DataLoader(decoder, batch_size=DECODE_CHUNK, num_workers=int(num_workers),
                                             collate_fn=_as_is)
    else:
        chunks = ([decoder[i] for i in range(start, min(start + DECODE_CHUNK, len(unique)))]
                  for start in range(0, len(unique), DECODE_CHUNK))
    desc = "decoding audio (cache fill)" if audio.cache_folder else "checking audio"
    bad = []
    with tqdm(total=len(unique), desc=desc, disable=len(unique) < PARALLEL_CHECK_MIN_CLIPS) as progress:
        for chunk in chunks:
            bad.extend((clip_id, wav, error) for clip_id, wav, error in chunk if error is not None)
            progress.update(len(chunk))
    listed = [(os.path.basename(line.split(" (")[0]), line.split(" (")[0], "unreadable header: " + line) for line in extra_bad]
    if report_path and (bad or listed):
        os.makedirs(os.path.dirname(report_path) or ".", exist_ok=True)
        with open(report_path, "w", encoding="utf-8") as f:
            f.write("ID,wav,reason\n")
            for clip_id, wav, reason in bad + listed:
                f.write(f"{clip_id},{wav},\"{reason.replace(chr(34), chr(39))}\"\n")
    if bad and on_bad_audio == "error":
        shown = "\n".join(f"  {wav}: {reason}" for _, wav, reason in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise AudioReadError(
            f"{len(bad)} clips cannot be used (report: {report_path}); rerun with "
            f"--on_bad_audio=skip to leave them out:\n{shown}{more}"
        )
    if bad or listed:
        logger.warning("skipping %d bad clips (listed in %s)", len(bad) + len(listed), report_path)
    return {clip_id for clip_id, _, _ in bad}


def view_keys(n_views):
    """Output keys of the training crops: ``sig``, ``sig_view1``, ``sig_view2`` ..."""
    return ["sig"] + [f"sig_view{v}" for v in range(1, n_views)]


def make_dataset(rows, audio, train, extra_keys=(), n_views=1):
    """A ``DynamicItemDataset`` over manifest rows.

    Arguments
    ---------
    rows : list of dict
        Manifest rows (``ID``, ``wav``, ``duration``, ``class_idx`` ...).
    audio : AudioPipeline
    train : bool
        Training crops when True, full clips otherwise.
    extra_keys : sequence of str
        More output keys of dynamic items added by the caller.
    n_views : int
        Training only: independent crops per clip (see :func:`view_keys`);
        crop ``v`` is a pure function of (crop seed, clip id, ``v``).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset with output keys
    ``id``, ``sig`` ([n_samples]) and ``class_idx`` (int), plus
    ``sig_view1`` ... when ``train`` and ``n_views > 1``.
    """
    if int(n_views) < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    n_views = int(n_views) if train else 1
    data = {row["ID"]: dict(row) for row in rows}
    if len(data) != len(rows):
        raise ValueError("manifest rows have duplicate IDs")
    dataset = sb.dataio.dataset.DynamicItemDataset(data)

    # The decoded clip is an intermediate item: SpeechBrain computes it once
    # per fetch however many crops are taken from it.
    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("full_signal")
    def load_pipeline(wav):
        return audio.load(wav)

    @sb.utils.data_pipeline.takes("full_signal", "id")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(signal, clip_id):
        return audio.train_crop(signal, clip_id) if train else signal

    sb.dataio.dataset.add_dynamic_item([dataset], load_pipeline)
    sb.dataio.dataset.add_dynamic_item([dataset], audio_pipeline)
    extra_views = view_keys(n_views)[1:]
    if extra_views:

        @sb.utils.data_pipeline.takes("full_signal", "id")
        @sb.utils.data_pipeline.provides(*extra_views)
        def views_pipeline(signal, clip_id):
            for view in range(1, n_views):
                yield audio.train_crop(signal, clip_id, view)

        sb.dataio.dataset.add_dynamic_item([dataset], views_pipeline)
    # class_idx stays a plain int: PaddedBatch collates it as a list.
    sb.dataio.dataset.set_output_keys([dataset], ["id", "sig", *extra_views, "class_idx", *extra_keys])
    return dataset
