using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Tokenization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Training;

/// <summary>How the top of the encoder is fine-tuned. The defaults are the ones the committed default model was trained with.</summary>
public sealed record FineTuneOptions
{
    /// <summary>
    /// How many of the encoder's top layers are fine-tuned; the layers below (and the embeddings, always) stay frozen.
    /// All 6 of MiniLM's: on data/sentiment/validation.jsonl, 2 layers (rank 8) reached 0.88–0.90, 6 layers 0.93–0.94.
    /// </summary>
    public int TrainedLayers { get; init; } = 6;
    /// <summary>Rank r of each linear map's delta B·A. 4 keeps the committed file under 1 MB for 6 layers (rank 8: 1.3 MB).</summary>
    public int Rank { get; init; } = 4;
    /// <summary>Passes over the training texts (validation accuracy peaked at 3–4 of 5).</summary>
    public int Epochs { get; init; } = 4;
    /// <summary>Texts per optimiser step.</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>Adam's step size at the start; it falls linearly to zero over the run.</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>Seeds the factors' initial values and the order of the texts in each epoch.</summary>
    public int Seed { get; init; } = 15;
    /// <summary>Token limit.</summary>
    public int MaxLength { get; init; } = 128;

    public void Validate()
    {
        if (TrainedLayers < 1) throw new ArgumentException("trained layers must be at least 1");
        if (Rank < 1) throw new ArgumentException("rank must be positive");
        if (Epochs < 0) throw new ArgumentException("epochs must not be negative");
        if (BatchSize < 1) throw new ArgumentException("batch size must be positive");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentException("learning rate must be a positive number");
    }
}

/// <summary>One epoch as the trainer saw it (for the log and delta.json).</summary>
public sealed record EpochReport(int Epoch, double MeanLoss, double TrainAccuracy, double? ValidationAccuracy);

/// <summary>
/// Fine-tunes the top layers of a pretrained mean-pooling encoder and a linear head on labelled texts, as an
/// <see cref="EncoderDelta"/> (low-rank deltas on the linear maps, new biases and LayerNorm weights, the head).
/// <para>
/// Cheap: the frozen bottom (embeddings and the layers below the trained ones) runs once per text, with the engine's
/// own forward; every epoch then runs only the trained layers on those cached hidden states. The trained layers are
/// written out here with autograd parameters (<c>W + B·A</c> through <see cref="EncoderDelta.Merge"/>), the same
/// computation as the engine's encoder layer with plain ops: tests check that the merged checkpoint's logits equal this
/// forward's.
/// </para>
/// <para>
/// Deterministic: no dropout; the initial factors and the order of the texts come from <see cref="Random"/> seeded
/// with <see cref="FineTuneOptions.Seed"/>; every sum runs in libtorch's fixed order on the CPU. Two runs with the
/// same threads on the same machine give the same bytes.
/// </para>
/// </summary>
public sealed class EncoderFineTuner : IDisposable
{
    private readonly ITextModel _encoder;
    private readonly FineTuneOptions _options;
    private readonly int _firstTrained;
    private readonly List<(string Name, Parameter Value)> _parameters = new();
    private readonly Dictionary<string, Parameter> _byName = new();
    /// <summary>The frozen base weight of each trained layer's map (<c>{layer}.{map}</c>; qkv: Q, K, V stacked), made once.</summary>
    private readonly Dictionary<string, Tensor> _baseWeights = new();
    private readonly Activation _activation;
    /// <summary>Seeded once: first the factors' initial values, then each epoch's order.</summary>
    private readonly Random _random;

    /// <summary>The bottom of <paramref name="encoder"/> (frozen) and fresh trainable parameters for its top layers.</summary>
    public EncoderFineTuner(LoadedModel encoder, IReadOnlyList<string> labels, FineTuneOptions options)
    {
        options.Validate();
        _encoder = encoder.Float32;
        var c = _encoder.Config;
        if (c.Head != HeadKind.MeanPooling || _encoder.HasClassifier)
            throw new ArgumentException($"fine-tuning needs a bare mean-pooling encoder; {encoder.Directory} is {c.Architecture}");
        if (options.TrainedLayers > c.Layers) throw new ArgumentException($"cannot train {options.TrainedLayers} layers of a {c.Layers}-layer encoder");
        if (labels.Count < 2) throw new ArgumentException("a head needs at least two labels");
        Tokenizer = encoder.Tokenizer;
        Labels = labels.ToList();
        _options = options;
        _firstTrained = c.Layers - options.TrainedLayers;
        _activation = TransformerClassifier.ActivationFor(c.HiddenAct);

        var random = _random = new Random(options.Seed);
        for (int i = _firstTrained; i < c.Layers; i++)
        {
            foreach (var map in EncoderDelta.Maps)
            {
                var w = _baseWeights[$"{i}.{map}"] = EncoderDelta.BaseWeight(_encoder, i, map).DetachFromDisposeScope();
                long outputs = w.shape[0], inputs = w.shape[1];
                // A ~ U(−1/√in, 1/√in), B = 0 (LoRA's start): the delta is zero at step 0 and A's scale keeps B·A's
                // gradient at the weights' own scale.
                double bound = 1.0 / Math.Sqrt(inputs);
                var a = new float[options.Rank * inputs];
                for (int k = 0; k < a.Length; k++) a[k] = (float)((random.NextDouble() * 2 - 1) * bound);
                Add(EncoderDelta.LoraA(i, map), tensor(a, dtype: ScalarType.Float32).reshape(options.Rank, inputs));
                Add(EncoderDelta.LoraB(i, map), zeros(outputs, options.Rank, dtype: ScalarType.Float32));
            }
            foreach (var v in EncoderDelta.Vectors)
                Add(EncoderDelta.Vector(i, v), EncoderDelta.BaseVector(_encoder, i, v).to_type(ScalarType.Float32).cpu().clone());
        }
        Add(EncoderDelta.ClassifierWeight, zeros(labels.Count, c.HiddenSize, dtype: ScalarType.Float32));
        Add(EncoderDelta.ClassifierBias, zeros(labels.Count, dtype: ScalarType.Float32));
    }

    public ITextTokenizer Tokenizer { get; }
    public IReadOnlyList<string> Labels { get; }

    private void Add(string name, Tensor value)
    {
        var p = new Parameter(value.DetachFromDisposeScope(), requires_grad: true);
        _parameters.Add((name, p));
        _byName[name] = p;
    }

    private Tensor BaseWeight(int layer, string map) => _baseWeights[$"{layer}.{map}"];

    /// <summary>Hidden states [L, H] of each text after the frozen layers (computed once, reused every epoch).</summary>
    public sealed class Cached : IDisposable
    {
        public required IReadOnlyList<Tensor> Hidden { get; init; }
        public required int[] Labels { get; init; }
        public int Count => Hidden.Count;
        public void Dispose() { foreach (var t in Hidden) t.Dispose(); }
    }

    /// <summary>Runs the frozen bottom of the encoder once over <paramref name="rows"/> (texts grouped by length, no padding).</summary>
    public Cached Prepare(IReadOnlyList<LabeledText> rows)
    {
        var labels = HeadTrainer.LabelIndices(rows, Labels);
        var tokenized = rows.Select(r => Tokenizer.Encode(r.Text, Math.Min(_options.MaxLength, _encoder.Config.MaxSequenceLength))).ToList();
        // The frozen bottom as a model of its own: the encoder's architecture built from the embeddings' and the
        // untrained layers' roles (new handles on the encoder's storage; disposing the bottom frees only those).
        var config = _encoder.Config with { Layers = _firstTrained };
        var architecture = Architectures.ArchitectureRegistry.Of(config);
        var roles = architecture.Weights(config, withClassifier: false).Roles
            .ToDictionary(r => r.Role, r => _encoder.Weights[r.Role].detach());
        using var bottom = architecture.Build(config, roles);
        var hidden = new Tensor[rows.Count];
        using (no_grad())
            foreach (var bucket in TextExplainer.Buckets(tokenized, 32))
            {
                using var scope = NewDisposeScope();
                var ids = TextExplainer.IdsTensor(bucket.Select(i => tokenized[i]).ToList()).to(_encoder.Device);
                var h = bottom.Encode(PlainOps.Instance, new Act(bottom.WordEmbeddings(ids)), ones_like(ids)).X
                    .to_type(ScalarType.Float32).cpu();
                for (int j = 0; j < bucket.Count; j++) hidden[bucket[j]] = h[j].clone().DetachFromDisposeScope();
            }
        return new Cached { Hidden = hidden, Labels = labels };
    }

    /// <summary>Logits [B, C] of the texts <paramref name="batch"/> of <paramref name="data"/>: <see cref="Pooled"/>, then the head.</summary>
    public Tensor Forward(Cached data, IReadOnlyList<int> batch) =>
        nn.functional.linear(Pooled(data, batch), _byName[EncoderDelta.ClassifierWeight], _byName[EncoderDelta.ClassifierBias]);

    /// <summary>
    /// Mean-pooled output [B, H] of the trained layers on the texts <paramref name="batch"/> of <paramref name="data"/>,
    /// padded to the longest text with the engine's additive mask <c>(1 − mask)·finfo.min</c>.
    /// </summary>
    public Tensor Pooled(Cached data, IReadOnlyList<int> batch)
    {
        var c = _encoder.Config;
        long length = batch.Max(i => data.Hidden[i].shape[0]);
        long hidden = c.HiddenSize;
        var x = zeros(batch.Count, length, hidden, dtype: ScalarType.Float32);
        var maskData = new float[batch.Count * length];
        using (no_grad())
            for (int j = 0; j < batch.Count; j++)
            {
                var h = data.Hidden[batch[j]];
                x[j].narrow(0, 0, h.shape[0]).copy_(h);
                for (long t = 0; t < h.shape[0]; t++) maskData[j * length + t] = 1;
            }
        var mask = tensor(maskData, dtype: ScalarType.Float32).reshape(batch.Count, length);
        var bias = ((1 - mask) * float.MinValue).unsqueeze(1).unsqueeze(1);
        int heads = c.Heads;
        long headDim = hidden / heads;
        double scale = 1.0 / Math.Sqrt(headDim);
        Tensor SplitHeads(Tensor t) => t.reshape(t.shape[0], t.shape[1], heads, headDim).transpose(1, 2);
        Tensor P(string name) => _byName[name];
        Tensor W(int i, string map) => EncoderDelta.Merge(BaseWeight(i, map), P(EncoderDelta.LoraA(i, map)), P(EncoderDelta.LoraB(i, map)));
        Tensor LayerNorm(Tensor t, int i, string norm) =>
            nn.functional.layer_norm(t, new[] { hidden }, P(EncoderDelta.Vector(i, norm + ".weight")), P(EncoderDelta.Vector(i, norm + ".bias")), c.LayerNormEps);
        for (int i = _firstTrained; i < c.Layers; i++)
        {
            // TransformerClassifier.Encode's layer (post-LayerNorm BERT), with the attention written out.
            var qkv = nn.functional.linear(x, W(i, "qkv"), P(EncoderDelta.Vector(i, "qkv.bias")));
            var q = SplitHeads(qkv.narrow(-1, 0, hidden));
            var k = SplitHeads(qkv.narrow(-1, hidden, hidden));
            var v = SplitHeads(qkv.narrow(-1, 2 * hidden, hidden));
            var scores = q.matmul(k.transpose(-1, -2)) * scale + bias;
            var context = scores.softmax(-1).matmul(v).transpose(1, 2).reshape(batch.Count, length, hidden);
            var attended = nn.functional.linear(context, W(i, "attention_output"), P(EncoderDelta.Vector(i, "attention_output.bias")));
            var mid = LayerNorm(attended + x, i, "attention_norm");
            var inner = PlainOps.Plain(nn.functional.linear(mid, W(i, "intermediate"), P(EncoderDelta.Vector(i, "intermediate.bias"))), _activation);
            var ffn = nn.functional.linear(inner, W(i, "output"), P(EncoderDelta.Vector(i, "output.bias")));
            x = LayerNorm(ffn + mid, i, "output_norm");
        }
        var m = mask.unsqueeze(-1);
        return (x * m).sum(1) / m.sum(1).clamp_min(1);
    }

    /// <summary>Predicted label indices of every text of <paramref name="data"/> under the current parameters.</summary>
    public int[] Predict(Cached data)
    {
        var result = new int[data.Count];
        using var _ = no_grad();
        for (int start = 0; start < data.Count; start += 64)
        {
            using var scope = NewDisposeScope();
            var batch = Enumerable.Range(start, Math.Min(64, data.Count - start)).ToList();
            var predicted = Forward(data, batch).argmax(1).data<long>().ToArray();
            for (int j = 0; j < batch.Count; j++) result[batch[j]] = (int)predicted[j];
        }
        return result;
    }

    public static double Accuracy(IReadOnlyList<int> predicted, IReadOnlyList<int> labels) =>
        predicted.Count == 0 ? double.NaN : (double)predicted.Zip(labels).Count(p => p.First == p.Second) / predicted.Count;

    /// <summary>
    /// Trains every parameter for the configured epochs with Adam (β = 0.9, 0.999), the step falling linearly to zero.
    /// The head starts at zero and B at zero, so the first steps fit the head on the frozen encoder; the encoder's
    /// deltas follow as the head grows. (A head started from <see cref="HeadTrainer"/>'s regression was tried: its
    /// weights are ~1/σ of the pooled features, and the first Adam steps on the encoder sent the loss to 50–200.) <paramref name="validation"/>, when given, is scored after
    /// every epoch (reported, never used by the training itself).
    /// </summary>
    public List<EpochReport> Train(Cached train, Cached? validation = null, Action<EpochReport>? progress = null)
    {
        if (train.Count == 0) throw new ArgumentException("no training examples");
        var reports = new List<EpochReport>();
        var optimizer = optim.Adam(_parameters.Select(p => p.Value), lr: _options.LearningRate, beta1: 0.9, beta2: 0.999, eps: 1e-8);
        int stepsPerEpoch = (train.Count + _options.BatchSize - 1) / _options.BatchSize;
        int totalSteps = stepsPerEpoch * _options.Epochs, step = 0;
        var order = Enumerable.Range(0, train.Count).ToArray();
        for (int epoch = 1; epoch <= _options.Epochs; epoch++)
        {
            // Fisher–Yates with the seeded generator: the same order on every run.
            for (int i = order.Length - 1; i > 0; i--)
            {
                int j = _random.Next(i + 1);
                (order[i], order[j]) = (order[j], order[i]);
            }
            double lossSum = 0;
            for (int start = 0; start < order.Length; start += _options.BatchSize)
            {
                using var scope = NewDisposeScope();
                var batch = order.Skip(start).Take(_options.BatchSize).ToList();
                foreach (var group in optimizer.ParamGroups) group.LearningRate = _options.LearningRate * (1.0 - (double)step / totalSteps);
                optimizer.zero_grad();
                var logits = Forward(train, batch);
                var target = tensor(batch.Select(i => (long)train.Labels[i]).ToArray(), dtype: ScalarType.Int64);
                var loss = nn.functional.cross_entropy(logits, target);
                loss.backward();
                optimizer.step();
                lossSum += loss.item<float>() * batch.Count;
                step++;
            }
            var report = new EpochReport(epoch, lossSum / train.Count, Accuracy(Predict(train), train.Labels),
                validation is null ? null : Accuracy(Predict(validation), validation.Labels));
            reports.Add(report);
            progress?.Invoke(report);
        }
        optimizer.Dispose();
        return reports;
    }

    /// <summary>The parameters as they stand, as a delta on the base weights with SHA-256 <paramref name="baseSha256"/> (copies).</summary>
    public EncoderDelta ToDelta(string baseSha256)
    {
        var tensors = _parameters.ToDictionary(p => p.Name, p => p.Value.detach().clone().DetachFromDisposeScope());
        return new EncoderDelta(Enumerable.Range(_firstTrained, _options.TrainedLayers).ToList(), Labels, _options.Rank, baseSha256, tensors);
    }

    public void Dispose()
    {
        foreach (var (_, p) in _parameters) p.Dispose();
        foreach (var w in _baseWeights.Values) w.Dispose();
    }
}
