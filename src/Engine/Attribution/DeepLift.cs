using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>
/// Exact DeepLift: one forward pass carrying input and reference together through the exact rules, one
/// backward pass for the multipliers at the word-embedding output; <c>C = (x − x0) · m</c>. Summation-to-delta
/// holds to rounding for the exact softmax rule; the other rules report whatever delta they leave.
/// </summary>
public sealed class DeepLift : IAttributionMethod
{
    public string Name => "deeplift";

    public AttributionOutput Attribute(ITextModel model, AttributionBatch batch, MethodOptions options)
    {
        if (batch.ReferenceEmbeddings.Count != 1)
            throw new AttributionRequestException("reference", "DeepLift takes exactly one reference (use deeplift-shap for several)");
        AttributionMath.CheckTargets(batch.Targets, model.OutputSize);
        return AttributeOne(model, batch, 0, options);
    }

    /// <summary>
    /// DeepLift against one reference, in passes of <see cref="TextsPerPass"/> texts: the multipliers autograd keeps
    /// for the backward grow with the batch (~100 MB a layer for 16 × 128 on bert-base), so a smaller pass bounds
    /// peak memory. Texts are independent, so the result is the same.
    /// </summary>
    internal static AttributionOutput AttributeOne(ITextModel model, AttributionBatch batch, int referenceIndex, MethodOptions options)
    {
        var reference = batch.ReferenceEmbeddings[referenceIndex];
        long n = batch.Size, per = TextsPerPass(model, batch.Ids.shape[1], options, n, batch.Ids.device.type);
        if (n <= per) return AttributeChunk(model, batch, reference, referenceIndex, options);
        using var scope = NewDisposeScope();
        var parts = new List<AttributionOutput>();
        for (long start = 0; start < n; start += per)
        {
            long count = Math.Min(per, n - start);
            var slice = new AttributionBatch(batch.Ids.narrow(0, start, count), batch.AttentionMask.narrow(0, start, count),
                batch.ReferenceEmbeddings, batch.Targets?.AsSpan((int)start, (int)count).ToArray());
            Tensor r;
            if (batch.Groups is { } groups)
            {
                var (sliced, first) = groups.Slice(start, count);
                slice = slice with { Groups = sliced };
                r = reference.narrow(0, first, sliced.Count);
            }
            else r = reference.shape[0] == n ? reference.narrow(0, start, count) : reference;
            parts.Add(AttributeChunk(model, slice, r, referenceIndex, options));
        }
        var joined = new AttributionOutput(cat(parts.Select(p => p.Attributions).ToArray(), 0), cat(parts.Select(p => p.Scores).ToArray(), 0),
            cat(parts.Select(p => p.Fx).ToArray(), 0), cat(parts.Select(p => p.Fx0).ToArray(), 0), cat(parts.Select(p => p.Delta).ToArray(), 0),
            cat(parts.Select(p => p.Logits).ToArray(), 0), parts.SelectMany(p => p.Targets).ToArray())
        {
            ReferenceLogits = parts.All(p => p.ReferenceLogits is not null) ? cat(parts.Select(p => p.ReferenceLogits!).ToArray(), 0) : null,
        };
        return Detach(joined, scope);
    }

    private static AttributionOutput AttributeChunk(ITextModel model, AttributionBatch batch, Tensor reference, int referenceIndex, MethodOptions options) =>
        batch.Groups is null ? AttributeChunk(model, batch, reference, options) : AttributeGrouped(model, batch, reference, referenceIndex, options);

    /// <summary>
    /// Texts per pass: as many as <see cref="MethodOptions.PassMemoryBytes"/> holds by <see cref="BytesPerText"/> (at
    /// least one, at most <see cref="MethodOptions.MaxRowsPerPass"/>), then evened out over the passes a batch of
    /// <paramref name="batchSize"/> needs (16 texts with room for 9 go as 8 + 8). On CPU the pass size hardly moves the
    /// time (bert-base, 16 × 128: passes of 4, 8, 16 took 0.46, 0.50, 0.49 s/text, peak RSS 1.15, 1.58, 2.46 GB), so
    /// the budget only has to say what memory the process may use.
    /// </summary>
    public static long TextsPerPass(ITextModel model, long length, MethodOptions options, long? batchSize = null,
        TorchSharp.DeviceType device = TorchSharp.DeviceType.CPU) =>
        TextsPerPass(BytesPerText(model, length), options, batchSize, device);

    /// <summary><see cref="TextsPerPass(ITextModel, long, MethodOptions, long?, TorchSharp.DeviceType)"/> for a BERT-bodied model of <paramref name="config"/>.</summary>
    public static long TextsPerPass(Checkpoints.ModelConfig config, long length, ScalarType dtype, MethodOptions options, long? batchSize = null,
        TorchSharp.DeviceType device = TorchSharp.DeviceType.CPU) =>
        TextsPerPass(BytesPerText(config, length, dtype), options, batchSize, device);

    private static long TextsPerPass(long bytesPerText, MethodOptions options, long? batchSize, TorchSharp.DeviceType device)
    {
        long budget = options.PassMemoryBytes ?? MethodOptions.DefaultPassMemoryBytes(device);
        long byBudget = budget / Math.Max(1, bytesPerText);
        long per = Math.Clamp(byBudget, 1, Math.Max(1, options.MaxRowsPerPass));
        if (batchSize is not long n) return per;
        if (n <= per) return Math.Max(1, n);
        long passes = (n + per - 1) / per;
        return (n + passes - 1) / passes;
    }

    /// <summary>
    /// Memory one text of <paramref name="length"/> tokens adds to a DeepLift pass. Per layer the backward keeps one
    /// multiplier per element of: Q̄, K̄, V̄ and, in each of the two LayerNorms, (a + a0) and ā (7 · hidden · L); the two
    /// exp rules of the softmax and P̄ (3 · heads · L²); the GELU (intermediate · L). The rules' temporaries come on top:
    /// measured on bert-base at 128 tokens (80 MB of multipliers per text), the peak grew by 109 MB per text (passes of
    /// 4, 8, 16 under tcmalloc), so the estimate is 1.4 × the multipliers.
    /// </summary>
    public static long BytesPerText(ITextModel model, long length) =>
        (long)(BytesPerText(model.Config, length, model.DType) * model.DeepLiftMemoryScale);

    /// <summary>The count for a BERT layer of <paramref name="config"/>'s sizes (see the summary above).</summary>
    public static long BytesPerText(Checkpoints.ModelConfig config, long length, ScalarType dtype)
    {
        long perLayer = 7L * config.HiddenSize * length + 3L * config.Heads * length * length + (long)config.IntermediateSize * length;
        long elementBytes = dtype switch { ScalarType.Float64 => 8, ScalarType.Float16 or ScalarType.BFloat16 => 2, _ => 4 };
        return perLayer * config.Layers * elementBytes * 14 / 10;
    }

    /// <summary>
    /// One pass carrying the reference alongside the input. With <paramref name="record"/>, the reference half is also
    /// kept as a tape (one reference row only), handed back through <paramref name="tape"/>.
    /// </summary>
    private static AttributionOutput AttributeChunk(ITextModel model, AttributionBatch batch, Tensor reference, MethodOptions options,
        bool record = false) => AttributeChunk(model, batch, reference, options, record, out _);

    private static AttributionOutput AttributeChunk(ITextModel model, AttributionBatch batch, Tensor reference, MethodOptions options,
        bool record, out ReferenceTape? tape)
    {
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        CountPass(batch.Size);
        var x = model.WordEmbeddings(batch.Ids).detach().requires_grad_(true);
        var r = reference.detach();
        var ops = new DeepLiftOps(options.SoftmaxRule, options.PromoteMultipliers);
        var recorder = record && r.shape[0] == 1 ? new ReferenceTape.TapeRecorder(ops) : null;
        Act f, logits;
        long[] targets;
        using (EngineTelemetry.Source.StartActivity("engine.forward"))
        {
            logits = model.Forward(recorder ?? (Ops.TensorOps)ops, new Act(x, r), batch.AttentionMask);
            tape = recorder is null ? null : new ReferenceTape(recorder.Inputs, ReferenceTape.Keep(logits.Ref));
            targets = AttributionMath.ResolveTargets(batch.Targets, logits.X);
            f = TargetOutput.Select(ops, logits, targets, options.Output);
        }
        using (EngineTelemetry.Source.StartActivity("engine.backward"))
        {
            f.X.sum().backward();
            Rules.RuleGradients.ReleaseHanded();
        }
        var attributions = (x.detach() - r) * x.grad!;
        var result = AttributionMath.Finish(attributions, f.X, f.Ref, logits.X, targets) with { ReferenceLogits = RowsOf(logits.Ref, batch.Size) };
        return Detach(result, scope);
    }

    /// <summary>
    /// A padded batch of texts of several lengths (<see cref="AttributionBatch.Groups"/>): each group's reference half comes
    /// from its tape, one row wide, recorded with that group's own mask (or taken from the cache), and the input half of
    /// every text runs in one pass. The batch is first cut to its longest text, so a chunk of one length has no padding.
    /// </summary>
    private static AttributionOutput AttributeGrouped(ITextModel model, AttributionBatch batch, Tensor reference, int referenceIndex, MethodOptions options)
    {
        using var scope = NewDisposeScope();
        var groups = batch.Groups!;
        if (reference.shape[0] != groups.Count)
            throw new AttributionRequestException("reference", $"a batch of {groups.Count} length groups needs one reference row per group, got {reference.shape[0]}");
        var lengths = groups.Lengths();
        int width = lengths.Max();
        Tensor ids = batch.Ids, mask = batch.AttentionMask, masks = groups.Masks;
        if (width < ids.shape[1])
        {
            ids = ids.narrow(1, 0, width);
            mask = mask.narrow(1, 0, width);
            masks = masks.narrow(1, 0, width);
            reference = reference.narrow(1, 0, width);
        }
        var ops = new DeepLiftOps(options.SoftmaxRule, options.PromoteMultipliers);
        var name = groups.Names?[referenceIndex];
        var cache = name is null ? null : options.ReferenceCache;
        ReferenceKey Key(int g) => new(ReferenceKey.ModelId(model), name!, lengths[g], options.SoftmaxRule, options.PromoteMultipliers);
        var cached = groups.Count == 1 ? cache?.TryAcquire(Key(0)) : null;
        if (groups.Count == 1 && cached is null)
        {
            // One length, not cached: the reference is carried through the pass (one row) and recorded on the way.
            var plain = batch with { Ids = ids, AttentionMask = mask, Groups = null };
            var carried = AttributeChunk(model, plain, reference, options, cache is not null, out var recorded);
            if (recorded is not null) cache!.Add(Key(0), recorded);
            if (width < batch.Ids.shape[1]) carried = PadTo(carried, batch.Ids.shape[1]);
            return Detach(carried, scope);
        }
        var tapes = new List<ReferenceTape>();
        try
        {
            using (EngineTelemetry.Source.StartActivity("engine.reference"))
            {
                var found = new ReferenceTape?[groups.Count];
                found[0] = cached;
                for (int g = cached is null ? 0 : 1; g < groups.Count; g++) found[g] = cache?.TryAcquire(Key(g));
                foreach (var tape in found) if (tape is not null) tapes.Add(tape); // released below, whatever happens next
                var missing = Enumerable.Range(0, groups.Count).Where(g => found[g] is null).ToArray();
                if (missing.Length > 0)
                {
                    // Each missing length recorded at its own width (no padding), so its tape serves every later pass of
                    // any width, and is the same tape, to the bit, whichever batch first needed it.
                    for (int i = 0; i < missing.Length; i++)
                    {
                        int g = missing[i], length = lengths[g];
                        var tape = ReferenceTape.Record(model, reference.narrow(0, g, 1).narrow(1, 0, length), masks.narrow(0, g, 1).narrow(1, 0, length), ops);
                        tape.Acquire();
                        tapes.Add(tape);
                        if (cache is null) tape.Evict(); // used by this pass only: freed when it releases it
                        else cache.Add(Key(missing[i]), tape);
                        found[missing[i]] = tape;
                    }
                }
                tapes.Clear();
                tapes.AddRange(found.Select(t => t!));
            }
            using var grad = enable_grad();
            CountPass(ids.shape[0]);
            var x = model.WordEmbeddings(ids).detach().requires_grad_(true);
            var replay = new TapeReplayOps(ops, tapes, groups.Rows, lengths, width);
            var groupOfRow = tensor(ReferenceGroups.GroupOfRow(groups.Rows), device: x.device);
            Act f;
            Tensor logits, logitsRef;
            long[] targets;
            using (EngineTelemetry.Source.StartActivity("engine.forward"))
            {
                logits = model.Forward(replay, new Act(x), mask).X;
                if (replay.Steps != tapes[0].Steps)
                    throw new InvalidOperationException($"the pass made {replay.Steps} rule calls but the reference tape recorded {tapes[0].Steps}");
                logitsRef = cat(tapes.Select(t => t.Logits).ToArray(), 0).index_select(0, groupOfRow);
                targets = AttributionMath.ResolveTargets(batch.Targets, logits);
                f = TargetOutput.Select(ops, new Act(logits, logitsRef), targets, options.Output);
            }
            using (EngineTelemetry.Source.StartActivity("engine.backward"))
            {
                f.X.sum().backward();
                Rules.RuleGradients.ReleaseHanded();
            }
            var r = reference.index_select(0, groupOfRow);
            var attributions = (x.detach() - r) * x.grad!;
            // A text equal to its reference (x = x0 to the bit) has f(x0) = f(x): taken from this pass. Its tape was
            // recorded at the text's own width, and a wider pass computes the same function with other rounding (an ulp),
            // which would leave it a delta of that size against an output change of exactly 0.
            Tensor fx0 = f.Ref;
            using (no_grad())
            {
                var same = x.detach().eq(r).reshape(x.shape[0], -1).all(1);
                if (same.any().item<bool>())
                {
                    fx0 = where(same, f.X.detach(), f.Ref);
                    logitsRef = where(same.unsqueeze(1), logits.detach(), logitsRef);
                }
            }
            var result = AttributionMath.Finish(attributions, f.X, fx0, logits, targets) with { ReferenceLogits = RowsOf(logitsRef, batch.Size) };
            if (width < batch.Ids.shape[1]) result = PadTo(result, batch.Ids.shape[1]);
            return Detach(result, scope);
        }
        finally
        {
            foreach (var tape in tapes) tape.Release();
        }
    }

    /// <summary>Padded positions past the pass's own width: attributions and scores exactly 0.</summary>
    private static AttributionOutput PadTo(AttributionOutput o, long width) => o with
    {
        Attributions = nn.functional.pad(o.Attributions, new long[] { 0, 0, 0, width - o.Attributions.shape[1] }),
        Scores = nn.functional.pad(o.Scores, new long[] { 0, width - o.Scores.shape[1] }),
    };

    private static long _passes, _passRows;

    /// <summary>DeepLift passes run in this process and the texts in them (benchmarks: mean rows per pass).</summary>
    public static (long Passes, long Rows) PassCounts => (Interlocked.Read(ref _passes), Interlocked.Read(ref _passRows));

    private static void CountPass(long rows)
    {
        Interlocked.Increment(ref _passes);
        Interlocked.Add(ref _passRows, rows);
    }

    internal static AttributionOutput Detach(AttributionOutput o, TorchSharp.DisposeScope scope)
    {
        scope.MoveToOuter(o.Attributions, o.Scores, o.Fx, o.Fx0, o.Delta, o.Logits);
        if (o.ReferenceLogits is not null) scope.MoveToOuter(o.ReferenceLogits);
        return o;
    }

    /// <summary>The reference's logits [1 or n, C] as one float64 row per text, on the CPU.</summary>
    private static Tensor RowsOf(Tensor referenceLogits, long n) =>
        referenceLogits.detach().to_type(ScalarType.Float64).cpu().expand(n, -1).contiguous();
}

/// <summary>
/// DeepLiftShap: exact DeepLift against each of several references, attributions averaged; delta is taken
/// against the mean of the references' outputs, so it stays at rounding level too.
/// </summary>
public sealed class DeepLiftShap : IAttributionMethod
{
    public string Name => "deeplift-shap";

    public AttributionOutput Attribute(ITextModel model, AttributionBatch batch, MethodOptions options)
    {
        if (batch.ReferenceEmbeddings.Count == 0) throw new AttributionRequestException("reference", "deeplift-shap needs at least one reference");
        AttributionMath.CheckTargets(batch.Targets, model.OutputSize);
        using var scope = NewDisposeScope();
        Tensor? attr = null, fx0 = null, fx = null, logits = null;
        for (int i = 0; i < batch.ReferenceEmbeddings.Count; i++)
        {
            // The first pass resolves predicted targets; the others explain the same ones.
            var one = DeepLift.AttributeOne(model, batch, i, options);
            batch = batch with { Targets = one.Targets };
            attr = attr is null ? one.Attributions : attr + one.Attributions;
            fx0 = fx0 is null ? one.Fx0 : fx0 + one.Fx0;
            fx = one.Fx;
            logits ??= one.Logits;
        }
        int n = batch.ReferenceEmbeddings.Count;
        return DeepLift.Detach(AttributionMath.Finish(attr! / n, fx!, fx0! / n, logits!, batch.Targets!), scope);
    }
}
