using System.Diagnostics;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Text;
using static TorchSharp.torch;

namespace AttributionFleet.Cli.Commands;

/// <summary>What <c>fleet bench job</c> runs, as parsed from its command line.</summary>
public sealed record BenchJobOptions
{
    /// <summary>Model folder; null: the random bert-base-sized model of <c>fleet bench attribute</c> with <see cref="Layers"/> layers.</summary>
    public string? Model { get; init; }
    public int Layers { get; init; } = 12;
    /// <summary>Texts file (one a line, or JSONL); null: <see cref="Texts"/> generated texts with <see cref="Lengths"/>.</summary>
    public string? Input { get; init; }
    public int Texts { get; init; } = 33;
    /// <summary>"lognormal" (median 64 tokens, σ 0.5, 16–128: short reviews and messages) or "MIN-MAX" uniform.</summary>
    public string Lengths { get; init; } = "lognormal";
    public int BatchSize { get; init; } = 8;
    public string Precision { get; init; } = "float32";
    public int? PassMemoryMB { get; init; }
    public int? ReferenceCacheMB { get; init; }
    /// <summary>Also run the job in one-length batches (the batching before #13).</summary>
    public bool Exact { get; init; }
    public int Seed { get; init; } = 1;
    /// <summary>Write the job's texts (one a line) and, beside them (FILE.ids.json), their token ids and the model folder, then stop.</summary>
    public string? WriteTexts { get; init; }
    /// <summary>Pairs of warm runs (fixed length, then the mixed job; the order alternating) for the paired ratio.</summary>
    public int Repeats { get; init; } = 1;
    /// <summary>"cpu" or "cuda" (a CUDA build of TorchSharp on a machine with a GPU); null: the CPU.</summary>
    public string? Device { get; init; }
}

/// <summary>
/// <c>fleet bench job</c>: a job as the worker runs it. Texts of a realistic spread of lengths (or a file) go through
/// <see cref="TextExplainer.Explain"/> as one job, twice: "cold" (empty reference cache: the first job of a model) and
/// "warm" (the same lengths again: the references come from the cache). Beside them, two fixed-length baselines: the same
/// number of texts at the job's mean length (the same tokens in total), and each of the job's texts counted at what it
/// costs in a full batch of its own length (what <c>fleet bench attribute</c> measures at that length). Figures, not a
/// test; on a shared machine read the ratios.
/// </summary>
public static class BenchJobCommand
{
    public const string Usage =
        "fleet bench job [--model DIR | --layers 12] [--input texts.txt | --texts 33 --lengths lognormal|MIN-MAX] [--batch 8] [--precision float32|float64] [--pass-memory-mb M] [--reference-cache-mb M] [--exact] [--seed 1] [--repeats 1] [--device cpu|cuda] [--threads N] [--write-texts FILE]";

    public static readonly string[] ValueOptions = { "model", "layers", "input", "texts", "lengths", "batch", "precision", "pass-memory-mb", "reference-cache-mb", "seed", "repeats", "device", "threads", "write-texts" };
    public static readonly string[] FlagOptions = { "exact" };

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, ValueOptions, FlagOptions);
        int threads = cl.Int("threads", 0);
        if (threads > 0) set_num_threads(threads);
        return Run(new BenchJobOptions
        {
            Model = cl.Value("model"),
            Layers = cl.Int("layers", 12),
            Input = cl.Value("input"),
            Texts = cl.Int("texts", 33),
            Lengths = cl.Value("lengths") ?? "lognormal",
            BatchSize = cl.Int("batch", 8),
            Precision = cl.Value("precision") ?? "float32",
            PassMemoryMB = cl.Value("pass-memory-mb") is null ? null : cl.Int("pass-memory-mb", 0),
            ReferenceCacheMB = cl.Value("reference-cache-mb") is null ? null : cl.Int("reference-cache-mb", 0),
            Exact = cl.Flag("exact"),
            Seed = cl.Int("seed", 1),
            WriteTexts = cl.Value("write-texts"),
            Repeats = cl.Int("repeats", 1),
            Device = cl.Value("device"),
        }, stdout);
    }

    public static int Run(BenchJobOptions o, TextWriter stdout)
    {
        if (o.Texts < 1) throw new UsageException($"--texts must be positive, got {o.Texts}");
        if (o.Layers < 1) throw new UsageException($"--layers must be positive, got {o.Layers}");
        if (o.Repeats < 1) throw new UsageException($"--repeats must be positive, got {o.Repeats}");
        var dir = o.Model ?? BenchCommand.BertBaseDir(o.Layers);
        using var loaded = LoadedModel.Load(dir, DeviceSelector.Resolve(o.Device ?? "cpu"));
        var explainer = new TextExplainer(loaded);
        int max = loaded.Config.MaxSequenceLength;
        List<string> texts = o.Input is not null
            ? TextInput.ReadFile(o.Input).Select(t => t.Text).ToList()
            : Generate(loaded, SampleLengths(o.Lengths, o.Texts, Math.Min(max, 512), o.Seed), o.Seed);
        if (texts.Count == 0) throw new UsageException($"{o.Input}: no texts");
        var tokenized = explainer.Tokenize(texts);
        var lengths = tokenized.Select(t => t.Ids.Length).ToList();
        if (o.WriteTexts is { } path)
        {
            File.WriteAllLines(path, texts);
            var ids = new { model = Path.GetFullPath(dir), pad_id = loaded.Tokenizer.PadId, ids = tokenized.Select(t => t.Ids).ToList() };
            File.WriteAllText(path + ".ids.json", System.Text.Json.JsonSerializer.Serialize(ids));
            stdout.WriteLine($"wrote {texts.Count} texts ({lengths.Min()}–{lengths.Max()} tokens, {lengths.Distinct().Count()} distinct) to {path}, ids to {path}.ids.json; model {Path.GetFullPath(dir)}");
            return 0;
        }
        long tokens = lengths.Sum();
        int fixedLength = (int)Math.Round(tokens / (double)texts.Count);
        // The same tokens in total at one length: as many texts of the mean length.
        var fixedTexts = Generate(loaded, Enumerable.Repeat(fixedLength, texts.Count).ToList(), o.Seed + 1);
        var request = new ExplainRequest
        {
            Precision = o.Precision, BatchSize = o.BatchSize, PassMemoryMB = o.PassMemoryMB, ReferenceCacheMB = o.ReferenceCacheMB,
        };
        request.Validate();
        var spread = lengths.GroupBy(l => l).Count();
        stdout.WriteLine($"bench job: {Path.GetFileName(dir.TrimEnd('/'))} ({loaded.Config.Layers} layers, {loaded.Config.HiddenSize}), {texts.Count} texts, " +
            $"{lengths.Min()}–{lengths.Max()} tokens ({spread} distinct, mean {tokens / (double)texts.Count:F1}), batch {o.BatchSize}, {o.Precision}, " +
            $"device {loaded.Float32.Device.type.ToString().ToLowerInvariant()}, {get_num_threads()} torch threads, allocator {Engine.NativeAllocator.Describe()}, reference cache {ReferenceCache.Shared.BudgetBytes >> 20} MiB");
        stdout.WriteLine($"matrix kernels: {Engine.MklKernels.Describe()}");

        // Warm-up: first-call costs (thread pools, kernels) out of the figures.
        explainer.Explain(texts.Take(2).ToList(), request with { ReferenceCacheMB = 0 });
        long baseline = BenchCommand.CurrentRss(); // the weights, the runtime and libtorch, before any pass of the job

        stdout.WriteLine($"{"run",-40} {"s/text",8} {"texts/s",8} {"ms/token",9} {"vs mean",8} {"vs own",8} {"cpu s/text",10} {"cpu vs own",10} {"rows/pass",9} {"passes",6} {"hit rate",8} {"|delta| max",11}");
        var fixedCold = Measure(explainer, fixedTexts, request, clear: true);
        var fixedWarm = Measure(explainer, fixedTexts, request, clear: false);
        var (ownCold, ownWarm) = MeasureOwnLengths(explainer, loaded, lengths, request, o.Seed + 2);
        Print(stdout, $"fixed length {fixedLength} (the mean), cold", fixedCold, fixedCold, ownCold);
        Print(stdout, $"fixed length {fixedLength} (the mean), warm", fixedWarm, fixedWarm, ownWarm);
        Print(stdout, "each text at its own length, cold", ownCold, fixedCold, ownCold);
        Print(stdout, "each text at its own length, warm", ownWarm, fixedWarm, ownWarm);
        var cold = Measure(explainer, texts, request, clear: true);
        var warm = Measure(explainer, texts, request, clear: false);
        var held = (Bytes: ReferenceCache.Shared.Bytes, Count: ReferenceCache.Shared.Count);
        Print(stdout, "mixed lengths, cold cache", cold, fixedCold, ownCold);
        Print(stdout, "mixed lengths, warm cache", warm, fixedWarm, ownWarm);
        // What tokenizing the job costs beside explaining it (the planner counts tokens and each batch tokenizes again).
        var tokenizing = Stopwatch.StartNew();
        for (int i = 0; i < 5; i++) explainer.Tokenize(texts);
        double tokenizeSeconds = tokenizing.Elapsed.TotalSeconds / 5;
        stdout.WriteLine($"tokenizing the job's {texts.Count} texts: {tokenizeSeconds * 1e3:F2} ms, {tokenizeSeconds / warm.Seconds:P2} of the warm mixed job");
        var cost = explainer.PlanCost(request);
        var plan = LengthBuckets.Plan(lengths, o.BatchSize, cost);
        double padded = plan.Sum(b => cost.TextsWork(b.Count, b.Max(i => lengths[i]), b.Select(i => lengths[i]).Distinct().Count(), b.Sum(i => (long)lengths[i])));
        double own = lengths.Sum(cost.RowWork);
        stdout.WriteLine($"mixed plan: {plan.Count} batches (widths {string.Join(", ", plan.Select(b => b.Max(i => lengths[i])))}), " +
            $"{plan.Average(b => b.Select(i => lengths[i]).Distinct().Count()):F1} lengths a batch; padding adds {padded / own - 1:P0} to the texts' own work");
        // The plan's batches with every text at its batch's width: the same passes and padding, one length a batch. Beside
        // the fixed-length run it shows what padding costs; beside the mixed run, what the lengths cost.
        var widthLengths = new int[lengths.Count];
        foreach (var b in plan) foreach (var i in b) widthLengths[i] = b.Max(j => lengths[j]);
        var widthTexts = Generate(loaded, widthLengths, o.Seed + 3);
        Measure(explainer, widthTexts, request, clear: false);
        var widths = Measure(explainer, widthTexts, request, clear: false);
        Print(stdout, "the plan's widths (one length), warm", widths with { Tokens = tokens }, fixedWarm, ownWarm);
        if (o.Repeats > 1)
        {
            // Warm runs in pairs, the order alternating, so that a drift of the machine within the pairs cancels: the
            // single runs above are minutes apart, and this machine drifts by more than the effect being measured.
            var ratios = new List<double>();
            for (int i = 0; i < o.Repeats; i++)
            {
                Figures a, b;
                if (i % 2 == 0) { a = Measure(explainer, fixedTexts, request, clear: false); b = Measure(explainer, texts, request, clear: false); }
                else { b = Measure(explainer, texts, request, clear: false); a = Measure(explainer, fixedTexts, request, clear: false); }
                ratios.Add(b.Seconds / b.Tokens / (a.Seconds / a.Tokens));
            }
            ratios.Sort();
            double median = ratios.Count % 2 == 1 ? ratios[ratios.Count / 2] : (ratios[ratios.Count / 2 - 1] + ratios[ratios.Count / 2]) / 2;
            stdout.WriteLine($"mixed warm vs fixed length {fixedLength} warm, per token, {o.Repeats} alternating pairs: median {median:F3}x " +
                $"(pairs {string.Join(", ", ratios.Select(r => r.ToString("F3")))})");
        }
        if (o.Input is null)
        {
            // The next job: other texts from the same spread of lengths, the cache as this job left it (a tape is kept
            // per length, so the hit rate is what a worker's second job sees). Compared per token.
            var nextTexts = Generate(loaded, SampleLengths(o.Lengths, o.Texts, Math.Min(max, 512), o.Seed + 100), o.Seed + 101);
            Print(stdout, "next job (other texts, same spread)", Measure(explainer, nextTexts, request, clear: false), fixedWarm, ownWarm);
            // A worker some jobs later: four more jobs of other texts after that one, then a sixth measured (the cache as
            // they left it).
            for (int j = 2; j <= 5; j++)
                explainer.Explain(Generate(loaded, SampleLengths(o.Lengths, o.Texts, Math.Min(max, 512), o.Seed + 100 * j), o.Seed + 100 * j + 1), request);
            var laterTexts = Generate(loaded, SampleLengths(o.Lengths, o.Texts, Math.Min(max, 512), o.Seed + 600), o.Seed + 601);
            Print(stdout, "sixth job (after five of other texts)", Measure(explainer, laterTexts, request, clear: false), fixedWarm, ownWarm);
        }
        if (o.Exact)
        {
            var exact = new TextExplainer(loaded) { CostModel = new BucketCostModel { ReferenceRow = 1e9 } };
            Print(stdout, "one-length batches, cold cache", Measure(exact, texts, request, clear: true), fixedCold, ownCold);
            Print(stdout, "one-length batches, no cache", Measure(exact, texts, request with { ReferenceCacheMB = 0 }, clear: true), fixedCold, ownCold);
        }
        stdout.WriteLine("vs mean: per token against texts of the job's mean length; vs own: per token against each of the job's texts run in a " +
            "full batch of texts of its own length (what `fleet bench attribute` measures at that length), summed over the job");
        stdout.WriteLine("the plan's widths: each text lengthened to its batch's width (the same passes, one length a batch, every position real work), " +
            "per token of the job's own texts; a model that packs its position-wise layers (bert, roberta, distilbert, electra, xlm-roberta) pays for a mixed batch's padding only in attention");
        long peak = BenchCommand.PeakRssBytes();
        stdout.WriteLine($"peak RSS {peak / 1048576.0:F0} MiB: {baseline / 1048576.0:F0} MiB before the job's passes (weights, runtime) + {(peak - baseline) / 1048576.0:F0} MiB " +
            $"(pass budget {(o.PassMemoryMB ?? 1024)} MiB + reference cache {ReferenceCache.Shared.BudgetBytes >> 20} MiB; after the mixed job the cache held {held.Bytes / 1048576.0:F0} MiB in {held.Count} tapes)");
        stdout.WriteLine("cpu s/text: process CPU time (all threads), steadier than wall time when other processes share the cores");
        return 0;
    }

    private sealed record Figures(double Seconds, double CpuSeconds, int Texts, long Tokens, double RowsPerPass, long Passes, double HitRate, double MaxDelta);

    private static Figures Measure(TextExplainer explainer, List<string> texts, ExplainRequest request, bool clear)
    {
        if (clear) ReferenceCache.Shared.Clear();
        ReferenceCache.Shared.ResetCounters();
        var (passes0, rows0) = DeepLift.PassCounts;
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var results = explainer.Explain(texts, request);
        double seconds = sw.Elapsed.TotalSeconds;
        double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
        var (passes1, rows1) = DeepLift.PassCounts;
        long passes = passes1 - passes0;
        return new Figures(seconds, cpu, texts.Count, results.Sum(r => (long)r.Tokens.Length), passes == 0 ? 0 : (rows1 - rows0) / (double)passes, passes,
            ReferenceCache.Shared.HitRate, results.Max(r => Math.Abs(r.Delta)));
    }

    private static void Print(TextWriter stdout, string name, Figures f, Figures mean, Figures own)
    {
        double perToken = f.Seconds / f.Tokens;
        double vsMean = perToken / (mean.Seconds / mean.Tokens), vsOwn = perToken / (own.Seconds / own.Tokens);
        double cpuVsOwn = f.CpuSeconds / f.Tokens / (own.CpuSeconds / own.Tokens);
        stdout.WriteLine($"{name,-40} {f.Seconds / f.Texts,8:F4} {f.Texts / f.Seconds,8:F2} {perToken * 1e3,9:F3} {vsMean,7:F2}x {vsOwn,7:F2}x {f.CpuSeconds / f.Texts,10:F4} {cpuVsOwn,9:F2}x {f.RowsPerPass,9:F1} {f.Passes,6} {f.HitRate,8:P0} {f.MaxDelta,11:E1}");
    }

    /// <summary>
    /// The job's texts as the fixed-length benchmark would run them: for each distinct length, a full batch of texts of that
    /// length, first with its reference not yet cached (one reference row per batch) and then again (cached); each text of
    /// the job is then counted at its length's per-text figures. The same tokens as the job, none of them padding.
    /// </summary>
    private static (Figures Cold, Figures Warm) MeasureOwnLengths(TextExplainer explainer, LoadedModel loaded, List<int> lengths, ExplainRequest request, int seed)
    {
        ReferenceCache.Shared.Clear();
        double coldSeconds = 0, coldCpu = 0, warmSeconds = 0, warmCpu = 0, maxDelta = 0, rows = 0;
        long passes = 0;
        foreach (var group in lengths.GroupBy(l => l))
        {
            var batch = Generate(loaded, Enumerable.Repeat(group.Key, request.BatchSize).ToList(), seed + group.Key);
            var c = Measure(explainer, batch, request, clear: false);
            var w = Measure(explainer, batch, request, clear: false);
            int count = group.Count();
            coldSeconds += c.Seconds / c.Texts * count; coldCpu += c.CpuSeconds / c.Texts * count;
            warmSeconds += w.Seconds / w.Texts * count; warmCpu += w.CpuSeconds / w.Texts * count;
            maxDelta = Math.Max(maxDelta, Math.Max(c.MaxDelta, w.MaxDelta));
            rows += w.RowsPerPass * w.Passes;
            passes += w.Passes;
        }
        long tokens = lengths.Sum(l => (long)l);
        double rowsPerPass = passes == 0 ? 0 : rows / passes;
        return (new Figures(coldSeconds, coldCpu, lengths.Count, tokens, rowsPerPass, passes, 1.0 - (double)lengths.Distinct().Count() / lengths.Count, maxDelta),
            new Figures(warmSeconds, warmCpu, lengths.Count, tokens, rowsPerPass, passes, 1.0, maxDelta));
    }

    /// <summary>Token lengths (specials included): a clipped log-normal (median 64, σ 0.5, 16..128) or uniform MIN-MAX.</summary>
    internal static List<int> SampleLengths(string spec, int count, int maxLength, int seed)
    {
        var rng = new Random(seed);
        if (spec == "lognormal")
            return Enumerable.Range(0, count).Select(_ =>
            {
                double z = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
                return Math.Clamp((int)Math.Round(64 * Math.Exp(0.5 * z)), 16, Math.Min(128, maxLength));
            }).ToList();
        var parts = spec.Split('-');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int lo) || !int.TryParse(parts[1], out int hi) || lo < 3 || hi < lo || hi > maxLength)
            throw new UsageException($"--lengths must be 'lognormal' or MIN-MAX with 3 <= MIN <= MAX <= {maxLength}, got '{spec}'");
        return Enumerable.Range(0, count).Select(_ => rng.Next(lo, hi + 1)).ToList();
    }

    /// <summary>
    /// Texts of exactly the given token lengths (specials included) from the model's own vocabulary: words that are
    /// one token each, so a text of n − 2 words is n tokens.
    /// </summary>
    internal static List<string> Generate(LoadedModel model, IReadOnlyList<int> lengths, int seed)
    {
        var rng = new Random(seed);
        var words = SingleTokenWords(model);
        var texts = new List<string>();
        foreach (int length in lengths)
        {
            var text = string.Join(" ", Enumerable.Range(0, length - 2).Select(_ => words[rng.Next(words.Count)]));
            int got = model.Tokenizer.Encode(text, length + 8).Ids.Length;
            if (got != length) throw new InvalidOperationException($"generated text has {got} tokens, wanted {length}");
            texts.Add(text);
        }
        return texts;
    }

    private static List<string> SingleTokenWords(LoadedModel model)
    {
        var candidates = new[]
        {
            "the", "movie", "was", "great", "bad", "not", "a", "film", "good", "plot", "very", "boring", "acting", "story", "and",
            "but", "it", "is", "of", "to", "in", "that", "this", "with", "for", "on", "as", "time", "people", "music", "end", "best",
            "love", "really", "would", "could", "just", "like", "well", "even", "first", "scene", "much", "never", "little", "way",
        };
        var words = candidates.Where(w => model.Tokenizer.Encode(w, 8).Ids.Length == 3).ToList();
        if (words.Count == 0) throw new InvalidOperationException("the model's vocabulary has none of the benchmark's words as single tokens: use --input");
        return words;
    }
}
