using System.Diagnostics;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Rules;
using AttributionFleet.Engine.Text;
using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet bench predict|attribute</c>: figures, not pass/fail. Warm-up runs are excluded; each figure is the
/// median of <c>--repeats</c> runs; ratios are measured in the same process and run.
/// </summary>
public static class BenchCommand
{
    public const string Usage =
        "fleet bench predict   [--batch 32] [--length 128] [--repeats 3] [--threads N]\n" +
        "fleet bench attribute [--architecture bert|deberta-v2|modernbert] [--pooling mean|cls] [--batch 16] [--length 128] [--layers 12] [--repeats 3] [--ig-texts 2] [--steps 50] [--rules] [--no-promote] [--max-rows N] [--pass-memory-mb M] [--no-kernels] [--precision float32|float64|float16|bfloat16] [--device cpu|cuda] [--threads N]\n" +
        "fleet bench allocator (which malloc libtorch's tensors come from; see FLEET_NATIVE_ALLOCATOR)\n" +
        "fleet bench profile   [--architecture bert|deberta-v2|modernbert] [--pooling mean|cls] [--batch 16] [--length 128] [--layers 2] [--repeats 3] [--no-promote] [--no-kernels] [--threads N]\n" +
        BenchIgStepsCommand.Usage + "\n" +
        BenchTargetsCommand.Usage + "\n" +
        BenchFaithfulnessCommand.Usage + "\n" +
        BenchFleetCommand.Usage + "\n" +
        BenchJobCommand.Usage;

    private static readonly string[] Options = { "batch", "length", "repeats", "threads", "layers", "ig-texts", "steps", "precision", "device", "max-rows", "pass-memory-mb" };

    public static int Run(string[] args, TextWriter stdout)
    {
        if (args.Length == 0) throw new UsageException("usage: " + Usage);
        var rest = args[1..];
        switch (args[0])
        {
            case "predict": return Predict(new CommandLine(rest, Options, Array.Empty<string>()), stdout);
            case "attribute": return Attribute(new CommandLine(rest, Options.Concat(new[] { "architecture", "pooling" }).ToArray(), new[] { "rules", "no-promote", "no-kernels" }), stdout);
            case "fleet": return BenchFleetCommand.Run(rest, stdout);
            case "job": return BenchJobCommand.Run(rest, stdout);
            case "ig-steps": return BenchIgStepsCommand.Run(rest, stdout);
            case "targets": return BenchTargetsCommand.Run(rest, stdout);
            case "faithfulness": return BenchFaithfulnessCommand.Run(rest, stdout);
            case "rss": return LoadRss(rest, stdout);
            case "allocator":
                stdout.WriteLine($"allocator: {Engine.NativeAllocator.Describe()}; pid {Environment.ProcessId}; " +
                    $"{Engine.NativeAllocator.TunablesVariable}={Environment.GetEnvironmentVariable(Engine.NativeAllocator.TunablesVariable)}");
                stdout.WriteLine($"matrix kernels: {Engine.MklKernels.Describe()}");
                stdout.WriteLine($"OpenMP spin: {Engine.OpenMpSpin.Describe()}");
                return 0;
            case "profile": return Profile(new CommandLine(rest, Options.Concat(new[] { "architecture", "pooling" }).ToArray(), new[] { "no-promote", "no-kernels" }), stdout);
            default:
                throw new UsageException($"unknown benchmark '{args[0]}'; usage: {Usage}");
        }
    }

    private static void SetThreads(CommandLine cl)
    {
        if (cl.Flag("no-kernels")) Engine.Rules.CpuKernels.Enabled = false;
        int threads = cl.Int("threads", 0);
        if (threads > 0) set_num_threads(threads);
    }

    /// <summary>Median seconds of <paramref name="repeats"/> runs after one warm-up.</summary>
    internal static double Median(int repeats, Action run)
    {
        run();
        var times = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            run();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>Ids drawn from [1000, <paramref name="vocab"/>), the first <paramref name="cls"/> and the last <paramref name="sep"/> (BERT's by default).</summary>
    internal static long[,] RandomIds(int batch, int length, int vocab, int seed, long cls = 101, long sep = 102)
    {
        var rng = new Random(seed);
        var ids = new long[batch, length];
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < length; t++) ids[b, t] = rng.Next(1000, vocab);
            ids[b, 0] = cls;
            ids[b, length - 1] = sep;
        }
        return ids;
    }

    /// <summary>A random bert-base-sized checkpoint (12 layers, 768, 12 heads, 3072, bert-base-uncased vocab), made once in the cache.</summary>
    internal static string BertBaseDir(int layers = 12)
    {
        var dir = Path.Combine(MiniLmAssets.CacheRoot, layers == 12 ? "bench-bert-base" : $"bench-bert-base-{layers}l");
        if (File.Exists(Path.Combine(dir, "model.safetensors"))) return dir;
        var config = RandomModels.BertConfig(layers, 768, 12, 3072, 30522, 2);
        using var model = RandomModels.Create(config, seed: 0, std: 0.02);
        Directory.CreateDirectory(dir);
        var vocab = Path.Combine(dir, "vocab.txt");
        if (!File.Exists(vocab)) File.Copy(Path.Combine(MiniLmAssets.EnsureExtracted(), "vocab.txt"), vocab);
        RandomModels.Save(model, dir);
        return dir;
    }

    /// <summary>
    /// FLOPs of one forward pass of the encoder over <paramref name="length"/> tokens (multiply-add = 2), per token and
    /// layer: BERT's q, k, v, o (4h²), FFN (2hi), scores and context (2Lh).
    /// DeBERTa-v2 adds, for each of c2p and p2c, q·Krᵀ (or k·Qrᵀ) against the R relative rows the gather reaches
    /// (R = min(2·span, 2L − 1): exact while L ≤ position_buckets / 2, an upper bound past it); Kr and Qr are constants of
    /// the model, made once at load. ModernBERT: Wqkv and Wo (4h²), GeGLU Wi (2i × h) and Wo (h × i), and every layer's
    /// scores over all L keys (the sliding window is a mask on them, nothing is skipped).
    /// </summary>
    internal static double ForwardFlops(Engine.Checkpoints.ModelConfig c, int length)
    {
        double h = c.HiddenSize, i = c.IntermediateSize;
        if (c.Family == Engine.Architectures.ModernBert.ModernBertArchitecture.Family)
            return (2 * (4 * h * h + 3 * h * i) + 2 * 2 * length * h) * c.Layers * length;
        double perTokenPerLayer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * length * h;
        if (c.Family == Engine.Architectures.DebertaV2.DebertaV2Architecture.Family)
        {
            var s = Engine.Architectures.DebertaV2.DebertaV2Architecture.SettingsOf(c);
            double rows = Math.Min(2.0 * s.AttentionSpan, 2.0 * length - 1);
            int terms = (s.ContentToPosition ? 1 : 0) + (s.PositionToContent ? 1 : 0);
            if (s.RelativeAttention) perTokenPerLayer += terms * 2 * rows * h;
        }
        return perTokenPerLayer * c.Layers * length;
    }

    /// <summary>libtorch's own float32 matrix-multiply rate here: the ceiling for these models.</summary>
    internal static double MatmulGflops(Device? device = null)
    {
        using var scope = NewDisposeScope();
        var a = randn(new long[] { 2048, 768 }, device: device);
        var b = randn(new long[] { 768, 3072 }, device: device);
        double seconds = Median(3, () => a.matmul(b).sum().item<float>());
        return 2.0 * 2048 * 768 * 3072 / seconds / 1e9;
    }

    private static int Predict(CommandLine cl, TextWriter stdout)
    {
        SetThreads(cl);
        int batch = cl.Int("batch", 32), length = cl.Int("length", 128), repeats = cl.Int("repeats", 3);
        stdout.WriteLine($"bench predict: batch {batch}, length {length}, {get_num_threads()} torch threads, median of {repeats}, allocator {Engine.NativeAllocator.Describe()}");
        stdout.WriteLine($"matrix kernels: {Engine.MklKernels.Describe()}");

        // MiniLM: TorchSharp engine vs ONNX Runtime, same ids, same process.
        var minilmDir = MiniLmAssets.EnsureImported();
        var ids = RandomIds(batch, length, 30522, seed: 1);
        double torchSeconds, ortSeconds;
        using (var model = LoadedModel.Load(minilmDir, CPU))
        {
            var idsT = tensor(ids);
            var mask = ones_like(idsT);
            torchSeconds = Median(repeats, () =>
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                model.Float32.Encode(PlainOps.Instance, new Act(model.Float32.WordEmbeddings(idsT)), mask).X.sum().item<float>();
            });
        }
        using (var session = new InferenceSession(MiniLmAssets.OnnxPath))
        {
            var flat = ids.Cast<long>().ToArray();
            var shape = new long[] { batch, length };
            ortSeconds = Median(repeats, () =>
            {
                using var inputIds = OrtValue.CreateTensorValueFromMemory(flat, shape);
                using var maskV = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, flat.Length).ToArray(), shape);
                using var types = OrtValue.CreateTensorValueFromMemory(new long[flat.Length], shape);
                var inputs = new Dictionary<string, OrtValue> { ["input_ids"] = inputIds, ["attention_mask"] = maskV, ["token_type_ids"] = types };
                using var results = session.Run(new RunOptions(), inputs, session.OutputNames);
            });
        }
        stdout.WriteLine($"MiniLM (6 layers, 384)  engine {batch / torchSeconds,8:F1} texts/s   ONNX Runtime {batch / ortSeconds,8:F1} texts/s   engine/ORT {ortSeconds / torchSeconds:F2}x");

        var baseDir = BertBaseDir();
        using (var model = LoadedModel.Load(baseDir, CPU))
        {
            var idsT = tensor(ids);
            var mask = ones_like(idsT);
            double s = Median(repeats, () =>
            {
                using var scope = NewDisposeScope();
                model.Float32.Logits(idsT, mask).sum().item<float>();
            });
            double gflop = ForwardFlops(model.Config, length) * batch / 1e9;
            stdout.WriteLine($"bert-base-sized (12 layers, 768)  {batch / s,8:F2} texts/s   {gflop / s:F1} GFLOP/s");
        }

        // Peak RSS of a fresh process that loads the bert-base checkpoint (nothing else).
        var (rss, fileBytes) = MeasureLoadRss(baseDir);
        stdout.WriteLine($"peak RSS after loading bert-base: {rss / 1048576.0:F0} MiB for a {fileBytes / 1048576.0:F0} MiB checkpoint = {(double)rss / fileBytes:F2}x the file size");
        stdout.WriteLine($"matmul ceiling (libtorch float32): {MatmulGflops():F1} GFLOP/s");
        return 0;
    }

    internal static (long PeakRss, long FileBytes) MeasureLoadRss(string dir)
    {
        var exe = Environment.ProcessPath!;
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet") psi.ArgumentList.Add(typeof(BenchCommand).Assembly.Location);
        foreach (var a in new[] { "bench", "rss", dir }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var line = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        var parts = line.Split(' ');
        return (long.Parse(parts[0]), long.Parse(parts[1]));
    }

    /// <summary>Child-process mode: load the checkpoint, print "peakRssBytes fileBytes".</summary>
    private static int LoadRss(string[] args, TextWriter stdout)
    {
        using var model = Engine.Models.ModelLoader.Load(args[0], CPU);
        stdout.WriteLine($"{PeakRssBytes()} {new FileInfo(Path.Combine(args[0], "model.safetensors")).Length}");
        return 0;
    }

    /// <summary>
    /// Medians of <paramref name="repeats"/> alternating runs of <paramref name="a"/> and <paramref name="b"/> after one
    /// warm-up each, and the median of the per-pair ratios b/a.
    /// </summary>
    internal static (double A, double B, double Ratio) MedianPair(int repeats, Action a, Action b)
    {
        a();
        b();
        var pairs = new List<(double A, double B)>();
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            a();
            double ta = sw.Elapsed.TotalSeconds;
            sw.Restart();
            b();
            pairs.Add((ta, sw.Elapsed.TotalSeconds));
        }
        static double Mid(IEnumerable<double> v) => v.OrderBy(x => x).ElementAt(v.Count() / 2);
        return (Mid(pairs.Select(p => p.A)), Mid(pairs.Select(p => p.B)), Mid(pairs.Select(p => p.B / p.A)));
    }

    /// <summary>Resets VmHWM (Linux: "5" to /proc/self/clear_refs), so the next <see cref="PeakRssBytes"/> covers what follows.</summary>
    internal static void ResetPeakRss()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>VmHWM from /proc/self/status (peak resident set size).</summary>
    internal static long PeakRssBytes() => ProcStatusBytes("VmHWM:");

    /// <summary>VmRSS from /proc/self/status (current resident set size).</summary>
    internal static long CurrentRss() => ProcStatusBytes("VmRSS:");

    private static long ProcStatusBytes(string key)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return 0;
    }

    /// <summary>Where one DeepLift pass spends its time: each nonlinear op's rule, the linear rest, the backward.</summary>
    private static int Profile(CommandLine cl, TextWriter stdout)
    {
        if (cl.Value("device") is { } device && device != "cpu")
            throw new UsageException("profile times each op as it returns, which only the CPU allows (accelerator kernels run asynchronously); use bench attribute --device " + device);
        SetThreads(cl);
        int batch = cl.Int("batch", 16), length = cl.Int("length", 128), layers = cl.Int("layers", 2);
        using var bench = BenchModel.Create(cl.Value("architecture") ?? "bert", layers, cl.Value("pooling"), Precision.Float32, CPU);
        var model = bench.Model;
        var ids = tensor(bench.RandomIds(batch, length, seed: 2));
        var reference = model.WordEmbeddings(bench.ReferenceIds(length, CPU));
        int repeats = cl.Int("repeats", 3);
        var plain = new List<double>();
        var passes = new List<(double Forward, double Backward, Dictionary<string, double> Ops, long Held, long Peak)>();
        for (int round = 0; round <= repeats; round++)
        {
            using var scope = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            using (no_grad()) model.Logits(ids, ones_like(ids));
            double plainForward = sw.Elapsed.TotalSeconds;
            using var grad = enable_grad();
            var ops = new ProfilingOps(new Engine.Attribution.DeepLiftOps(promoteMultipliers: !cl.Flag("no-promote")));
            Engine.NativeAllocator.ReleaseFreeMemory();
            ResetPeakRss();
            long rssBefore = CurrentRss();
            sw.Restart();
            var x = model.WordEmbeddings(ids).detach().requires_grad_(true);
            var logits = model.Forward(ops, new Act(x, reference), ones_like(ids));
            double forward = sw.Elapsed.TotalSeconds;
            long heldAfterForward = CurrentRss() - rssBefore, peakForward = PeakRssBytes() - rssBefore;
            sw.Restart();
            logits.X.select(1, 0).sum().backward();
            Engine.Rules.RuleGradients.ReleaseHanded();
            double backward = sw.Elapsed.TotalSeconds;
            long peakPass = PeakRssBytes() - rssBefore;
            if (round == 0) continue; // warm-up
            plain.Add(plainForward);
            passes.Add((forward, backward, ops.Seconds, heldAfterForward, Math.Max(peakForward, peakPass)));
        }
        // The median round by total DeepLift time, with the plain forward of the same round beside it.
        var order = Enumerable.Range(0, passes.Count).OrderBy(i => passes[i].Forward + passes[i].Backward).ToList();
        int mid = order[order.Count / 2];
        var (f, b, seconds, held, peak) = passes[mid];
        stdout.WriteLine($"allocator: {Engine.NativeAllocator.Describe()}");
        stdout.WriteLine($"matrix kernels: {Engine.MklKernels.Describe()}");
        stdout.WriteLine($"DeepLift pass, {bench.Description}, batch {batch} x {length} (median of {repeats}): forward {f:F3} s, backward {b:F3} s; plain forward {plain[mid]:F3} s; DeepLift = {(f + b) / plain[mid]:F2}x plain forward");
        foreach (var (name, sec) in seconds.OrderByDescending(p => p.Value))
            stdout.WriteLine($"  {name,-22} {sec,7:F3} s  {sec / f,6:P0} of the forward");
        stdout.WriteLine($"  {"rest (maps, adds)",-22} {f - seconds.Values.Sum(),7:F3} s");
        stdout.WriteLine($"memory: the forward leaves {held / 1048576.0:F0} MiB for the backward; the pass peaks {peak / 1048576.0:F0} MiB above where it started");
        return 0;
    }

    private static int Attribute(CommandLine cl, TextWriter stdout)
    {
        SetThreads(cl);
        int batch = cl.Int("batch", 16), length = cl.Int("length", 128), repeats = cl.Int("repeats", 3);
        int? layers = cl.Value("layers") is null ? null : cl.Int("layers", 0);
        int igTexts = cl.Int("ig-texts", 2), steps = cl.Int("steps", 50);
        if (length < 2) throw new UsageException($"--length must be at least 2 ([CLS] and [SEP]), got {length}");
        var precision = new ExplainRequest { Precision = cl.Value("precision") ?? "float32" }.ParsePrecision();
        var device = DeviceSelector.Resolve(cl.Value("device"));
        using var bench = BenchModel.Create(cl.Value("architecture") ?? "bert", layers, cl.Value("pooling"), precision, device);
        stdout.WriteLine($"bench attribute: {bench.Description}, random init std 0.02, batch {batch}, length {length}, {precision}, device {device}, {get_num_threads()} torch threads, median of {repeats}, allocator {Engine.NativeAllocator.Describe()}");
        stdout.WriteLine($"matrix kernels: {Engine.MklKernels.Describe()}");
        var model = bench.Model;
        var ids = tensor(bench.RandomIds(batch, length, seed: 2)).to(device);
        var mask = ones_like(ids);
        var reference = model.WordEmbeddings(bench.ReferenceIds(length, device));
        var targets = Enumerable.Repeat(1L, batch).ToArray();
        double flops = ForwardFlops(model.Config, length) * batch;

        void Forward()
        {
            using var scope = NewDisposeScope();
            model.Logits(ids, mask).sum().to_type(ScalarType.Float64).item<double>();
        }
        double forward = Median(repeats, Forward);
        stdout.WriteLine($"forward                {forward / batch,8:F3} s/text  {batch / forward,8:F2} texts/s  {batch * length / forward,9:F0} tokens/s  {flops / forward / 1e9,6:F1} GFLOP/s");

        // The practical floor: a plain forward plus an input-gradient backward (what Saliency costs).
        double gradient = Median(repeats, () => new Saliency().Attribute(model, new AttributionBatch(ids, mask, new[] { reference }, targets),
            new MethodOptions { Output = OutputKind.Logit }));
        stdout.WriteLine($"gradient (fwd+bwd)     {gradient / batch,8:F3} s/text  {batch / gradient,8:F2} texts/s  cost {gradient / forward:F2}x forward");

        var rules = cl.Flag("rules") ? new[] { SoftmaxRuleKind.Exact, SoftmaxRuleKind.Rescale, SoftmaxRuleKind.RowMean } : new[] { SoftmaxRuleKind.Exact };
        double deeplift = 0;
        long deepliftPeak = 0;
        int passMemoryMb = cl.Int("pass-memory-mb", 0);
        long passMemory = passMemoryMb > 0 ? (long)passMemoryMb << 20 : MethodOptions.DefaultPassMemoryBytes(device.type);
        long perPass = DeepLift.TextsPerPass(model, length, new MethodOptions { MaxRowsPerPass = cl.Int("max-rows", 64), PassMemoryBytes = passMemory }, batch, device.type);
        foreach (var rule in rules)
        {
            AttributionOutput? result = null;
            var options = new MethodOptions
            {
                Output = OutputKind.Logit, SoftmaxRule = rule, PromoteMultipliers = !cl.Flag("no-promote"),
                MaxRowsPerPass = cl.Int("max-rows", 64), PassMemoryBytes = passMemory,
            };
            void Run() => result = new DeepLift().Attribute(model, new AttributionBatch(ids, mask, new[] { reference }, targets), options);
            string cost;
            double s;
            if (rule == SoftmaxRuleKind.Exact)
            {
                // Peak RSS of DeepLift alone (what a worker holds), from a released heap; then forward and DeepLift
                // timed in alternation, so that drift in this machine's speed hits both sides of the ratio.
                Engine.NativeAllocator.ReleaseFreeMemory();
                ResetPeakRss();
                Run();
                deepliftPeak = PeakRssBytes();
                var (f, d, ratio) = MedianPair(repeats, Forward, Run);
                s = deeplift = d;
                cost = $"cost {ratio:F2}x forward (paired; forward {f / batch:F3} s/text in these runs)";
            }
            else
            {
                s = Median(1, Run);
                cost = $"cost {s / forward:F2}x forward";
            }
            var rel = (result!.Delta.abs() / (result.Fx - result.Fx0).abs()).to_type(ScalarType.Float64);
            var sorted = rel.sort().Values;
            stdout.WriteLine($"deeplift/{rule,-8}       {s / batch,8:F3} s/text  {batch / s,8:F2} texts/s  {cost}   " +
                $"max|delta| {result.Delta.abs().max().item<double>():E2}  relative delta median {sorted[sorted.shape[0] / 2].item<double>():E2} max {sorted[-1].item<double>():E2}");
        }
        stdout.WriteLine($"peak RSS of the process while DeepLift attributes a batch of {batch} x {length} in passes of {perPass} (pass memory {passMemory >> 20} MiB): {deepliftPeak / 1048576.0:F0} MiB");

        if (igTexts > 0)
        {
            var igIds = ids[..igTexts];
            AttributionOutput? ig = null;
            double s = Median(1, () => ig = new IntegratedGradients().Attribute(model,
                new AttributionBatch(igIds, ones_like(igIds), new[] { reference }, targets[..igTexts]),
                new MethodOptions { Output = OutputKind.Logit, Steps = steps, MaxRowsPerPass = 16 }));
            double perText = s / igTexts;
            var rel = (ig!.Delta.abs() / (ig.Fx - ig.Fx0).abs()).max().item<double>();
            stdout.WriteLine($"integrated-gradients/{steps} {perText,8:F3} s/text  {1 / perText,8:F3} texts/s  cost {perText / (forward / batch):F1}x forward   max relative delta {rel:E2}   DeepLift is {perText / (deeplift / batch):F1}x cheaper");
        }
        double ceiling = MatmulGflops(device);
        stdout.WriteLine($"matmul ceiling {ceiling:F1} GFLOP/s; forward reaches {flops / forward / 1e9 / ceiling:P0}, DeepLift (forward-equivalent FLOPs x3) {3 * flops / deeplift / 1e9 / ceiling:P0}");
        stdout.WriteLine($"peak RSS of the whole benchmark {PeakRssBytes() / 1048576.0:F0} MiB");

        return 0;
    }
}
