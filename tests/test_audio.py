"""The audio pipeline on the kinds of files the real corpora hold."""
import numpy as np
import soundfile as sf
import torch

from speechbrain.lobes.features import Fbank
from speechbrain.processing.features import InputNormalization

from soundcl.data.audio import AudioPipeline, make_dataset, peak_normalize


def _tone(rate, seconds, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def test_stereo_24bit_96k_is_downmixed_and_resampled(tmp_path):
    path = tmp_path / "stereo.wav"
    left = _tone(96000, 1.5)
    sf.write(path, np.stack([left, -0.5 * left], axis=1), 96000, subtype="PCM_24")
    audio = AudioPipeline(sample_rate=16000, train_duration=1.0)
    wav = audio.load(str(path))
    assert wav.ndim == 1 and wav.dtype == torch.float32
    assert abs(wav.shape[0] - 24000) <= 1
    assert wav.abs().max().item() == 1.0  # peak-normalised
    # The mean of the channels is a 440 Hz tone: its spectrum peaks there.
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / wav.shape[0] - 440) < 5


def test_short_8bit_mono_is_padded_for_training(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _tone(22050, 0.05), 22050, subtype="PCM_U8")
    audio = AudioPipeline(sample_rate=16000, train_duration=1.0, pad_short_crops="dataset")
    wav = audio.load(str(path))
    assert abs(wav.shape[0] - 800) <= 1
    crop = audio.train_crop(wav, "short")
    assert crop.shape == (16000,)
    assert torch.all(crop[wav.shape[0]:] == 0)
    # The default (cssl_sound's): the short clip stays whole; the batch pads it.
    assert torch.equal(AudioPipeline(sample_rate=16000, train_duration=1.0).train_crop(wav, "short"), wav)


def test_short_training_clip_keeps_a_relative_length_below_one_and_its_padding_is_ignored(tmp_path):
    """pad_short_crops: batch (cssl_sound): a 0.4 s clip among 1 s crops has relative length 0.4 in the
    batch, and its sentence-normalised features and pooled embedding equal those of the clip alone;
    pad_short_crops: dataset pads it to length 1, so the padding enters the mean."""
    from speechbrain.dataio.batch import PaddedBatch

    from soundcl.models.encoders import masked_mean_max_pool

    rows = []
    for i, seconds in enumerate([0.4, 1.5]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, _tone(16000, seconds, freq=300.0 + 500 * i), 16000)
        rows.append({"ID": f"c{i}", "wav": str(path), "duration": seconds, "class_idx": i})
    fbank, norm = Fbank(n_mels=40), InputNormalization(norm_type="sentence", std_norm=False)

    def features(wavs, lens):
        return norm(fbank(wavs), lens)

    for mode in ("batch", "dataset"):
        audio = AudioPipeline(sample_rate=16000, train_duration=1.0, pad_short_crops=mode)
        dataset = make_dataset(rows, audio, train=True, n_views=2)
        batch = PaddedBatch([dataset[0], dataset[1]])
        wavs, lens = batch.sig
        assert wavs.shape == (2, 16000) and batch.sig_view1[0].shape == (2, 16000)
        alone = audio.load(rows[0]["wav"])[None]
        short = features(alone, torch.ones(1))[0]  # [frames, mels] of the clip alone
        feats = features(wavs, lens)
        n = short.shape[0]
        pooled = masked_mean_max_pool(feats.transpose(1, 2), lens)[0]
        if mode == "batch":
            torch.testing.assert_close(lens, torch.tensor([0.4, 1.0]))
            torch.testing.assert_close(batch.sig_view1[1], lens)
            torch.testing.assert_close(feats[0, :n], short, atol=1e-4, rtol=1e-4)
            valid = int(round(0.4 * feats.shape[1]))  # the frames the relative length covers
            alone_pooled = masked_mean_max_pool(short[:valid].T[None], None)[0]
            torch.testing.assert_close(pooled, alone_pooled, atol=1e-4, rtol=1e-4)
            # Whatever the padding holds, the pooled embedding is the same.
            noisy = feats.clone()
            noisy[0, n + 1:] = 50.0
            torch.testing.assert_close(masked_mean_max_pool(noisy.transpose(1, 2), lens)[0], pooled)
        else:
            torch.testing.assert_close(lens, torch.tensor([1.0, 1.0]))
            assert (feats[0, :n] - short).abs().max() > 1.0  # the silent padding moved the sentence mean
    from soundcl.core import config
    from soundcl.data import audio as audio_module

    assert config.CHOICES["pad_short_crops"] == audio_module.PAD_SHORT_CROPS  # checked at start
    # Deterministic: the same crops on a second pass with the same crop seed.
    again = make_dataset(rows, AudioPipeline(sample_rate=16000, train_duration=1.0), train=True)
    assert torch.equal(again[1]["sig"], make_dataset(rows, AudioPipeline(sample_rate=16000, train_duration=1.0),
                                                     train=True)[1]["sig"])


def test_crops_are_random_across_epochs_but_reproducible(tmp_path):
    audio = AudioPipeline(sample_rate=16000, train_duration=0.5)
    wav = torch.arange(32000, dtype=torch.float32)
    offsets = []
    for seed in range(6):
        audio.set_crop_seed(seed)
        offsets.append(int(audio.train_crop(wav, "clip")[0]))
    assert len(set(offsets)) > 1
    audio.set_crop_seed(3)
    assert int(audio.train_crop(wav, "clip")[0]) == offsets[3]
    assert all(0 <= o <= 32000 - 8000 for o in offsets)


def test_silent_clip_gives_finite_features(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000), 16000, subtype="PCM_16")
    audio = AudioPipeline(sample_rate=16000)
    wav = audio.load(str(path))
    assert torch.all(wav == 0)
    assert torch.all(peak_normalize(torch.zeros(10)) == 0)
    feats = Fbank(n_mels=40)(wav.unsqueeze(0))
    norm = InputNormalization()
    norm.train()
    out = norm(feats, torch.ones(1), epoch=1)
    assert torch.isfinite(feats).all() and torch.isfinite(out).all()


def test_cache_returns_the_same_waveform(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, _tone(44100, 0.3), 44100, subtype="PCM_16")
    cached = AudioPipeline(sample_rate=16000, cache_folder=str(tmp_path / "cache"))
    first = cached.load(str(path))
    files = list((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 1
    again = cached.load(str(path))
    plain = AudioPipeline(sample_rate=16000).load(str(path))
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, plain)


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"this is not audio")
    audio = AudioPipeline()
    try:
        audio.load(str(path))
    except RuntimeError as err:
        assert "broken.wav" in str(err)
    else:
        raise AssertionError("a non-audio file must raise")


def test_dataset_gives_full_clips_for_evaluation_with_relative_lengths(tmp_path):
    rows = []
    for i, seconds in enumerate([0.5, 1.0]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, _tone(16000, seconds), 16000)
        rows.append({"ID": f"c{i}", "wav": str(path), "duration": seconds, "class_idx": i})
    from speechbrain.dataio.batch import PaddedBatch

    dataset = make_dataset(rows, AudioPipeline(sample_rate=16000, train_duration=0.25), train=False)
    batch = PaddedBatch([dataset[0], dataset[1]])
    wavs, lens = batch.sig
    assert wavs.shape == (2, 16000)
    torch.testing.assert_close(lens, torch.tensor([0.5, 1.0]))
    assert torch.as_tensor(batch.class_idx).tolist() == [0, 1]
    train = make_dataset(rows, AudioPipeline(sample_rate=16000, train_duration=0.25), train=True)
    assert train[1]["sig"].shape == (4000,)


def test_parallel_cache_fill_caches_the_same_waveforms_and_finds_the_bad_clips(tmp_path):
    from soundcl.data.audio import check_clips

    rows = []
    for i, rate in enumerate([44100, 48000, 22050, 16000, 8000]):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, _tone(rate, 0.2, 200.0 + 50 * i), rate, subtype="PCM_16")
        rows.append({"ID": f"clip{i}", "wav": str(path)})
    (tmp_path / "broken.wav").write_bytes(b"this is not audio")
    rows.append({"ID": "broken", "wav": str(tmp_path / "broken.wav")})
    sequential = AudioPipeline(sample_rate=16000, cache_folder=str(tmp_path / "seq"))
    parallel = AudioPipeline(sample_rate=16000, cache_folder=str(tmp_path / "par"))
    assert check_clips(rows, sequential, on_bad_audio="skip") == {"broken"}
    assert check_clips(rows, parallel, on_bad_audio="skip", num_workers=2, min_parallel_clips=1) == {"broken"}
    for row in rows[:-1]:
        seq_file = sequential._cache_path(row["wav"])
        par_file = parallel._cache_path(row["wav"])
        np.testing.assert_array_equal(np.load(seq_file), np.load(par_file))  # written by a worker, same waveform
    assert len(list((tmp_path / "par").rglob("*.npy"))) == 5
