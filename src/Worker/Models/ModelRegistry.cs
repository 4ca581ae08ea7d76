using AttributionFleet.Engine.Text;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Models;

/// <summary>A job named a model id that is not configured.</summary>
public sealed class UnknownModelException(string modelId, IEnumerable<string> known)
    : Exception($"unknown model '{modelId}'; configured models: {(known.Any() ? string.Join(", ", known) : "(none)")}")
{
    public string ModelId { get; } = modelId;
}

/// <summary>
/// Configured models, each loaded once on first use and kept; beyond the memory budget the least recently
/// used model that no batch is using is unloaded. Thread-safe; loads of different models may overlap.
/// </summary>
public sealed class ModelRegistry : IDisposable
{
    private readonly Dictionary<string, ModelOptions> _configured;
    private readonly long _budgetBytes;
    private readonly string _device;
    private readonly ILogger<ModelRegistry> _log;
    private readonly object _gate = new();
    private readonly Dictionary<string, Entry> _loaded = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, SemaphoreSlim> _loading = new(StringComparer.OrdinalIgnoreCase);
    private long _clock;
    private readonly FleetMetrics? _metrics;
    private readonly Lazy<string> _deviceName;

    private sealed class Entry(LoadedModel model)
    {
        public LoadedModel Model { get; } = model;
        public int Leases;
        public long LastUsed;
    }

    private readonly Engine.EngineThreads? _threads;

    /// <param name="threads">Where models are loaded (the engine threads that will run them; see <see cref="Engine.EngineThreads"/>); null: the caller's thread.</param>
    public ModelRegistry(IOptions<ModelsOptions> models, IOptions<WorkerOptions> worker, ILogger<ModelRegistry> log, FleetMetrics? metrics = null,
        Engine.EngineThreads? threads = null)
    {
        _threads = threads;
        _configured = new Dictionary<string, ModelOptions>(models.Value.Models, StringComparer.OrdinalIgnoreCase);
        // The embedded default model is always there unless configured otherwise (built on first use, not preloaded).
        _configured.TryAdd(DefaultModel.Id, new ModelOptions());
        _budgetBytes = worker.Value.ModelMemoryBudgetMB * 1024 * 1024;
        _device = worker.Value.Device;
        _log = log;
        _metrics = metrics;
        _deviceName = new Lazy<string>(() =>
        {
            try { return DeviceSelector.Resolve(_device).type.ToString().ToLowerInvariant(); }
            catch (Exception) { return "unavailable"; }
        });
        metrics?.ObserveModels(() =>
        {
            lock (_gate) return _loaded.Select(p => (p.Key, DeviceName, p.Value.Model.WeightBytes)).ToList();
        });
    }

    /// <summary>The device type models load on (<c>cpu</c>, <c>cuda</c>), for metric attributes.</summary>
    public string DeviceName => _deviceName.Value;

    public IReadOnlyCollection<string> ModelIds => _configured.Keys;

    /// <summary>Models to load at start: those configured with a folder (the embedded default is built on first use).</summary>
    public IReadOnlyCollection<string> PreloadIds => _configured.Where(p => !string.IsNullOrEmpty(p.Value.Path)).Select(p => p.Key).ToList();

    /// <summary>The folder of a model: its configured path, or for the embedded default (no path) the folder built from the package.</summary>
    public static string FolderOf(string modelId, ModelOptions options) =>
        !string.IsNullOrEmpty(options.Path) ? options.Path
        : string.Equals(modelId, DefaultModel.Id, StringComparison.OrdinalIgnoreCase) ? DefaultModel.EnsureFolder()
        : throw new Engine.ModelLoadException($"Model '{modelId}' has no Path in configuration (Models:{modelId}:Path)", field: $"Models:{modelId}:Path");

    public int LoadedCount { get { lock (_gate) return _loaded.Count; } }

    public ModelOptions Options(string modelId) =>
        _configured.TryGetValue(modelId, out var o) ? o : throw new UnknownModelException(modelId, _configured.Keys);

    /// <summary>The model, loaded if needed; dispose the lease when the batch is done.</summary>
    public ModelLease Acquire(string modelId)
    {
        var options = Options(modelId);
        SemaphoreSlim loadGate;
        lock (_gate)
        {
            if (TryLease(modelId, out var lease)) return lease;
            if (!_loading.TryGetValue(modelId, out loadGate!)) _loading[modelId] = loadGate = new SemaphoreSlim(1, 1);
        }
        loadGate.Wait();
        try
        {
            lock (_gate)
                if (TryLease(modelId, out var lease)) return lease;
            var started = System.Diagnostics.Stopwatch.StartNew();
            var folder = AttributionFleet.Engine.Checkpoints.CheckpointFolder.Resolve(FolderOf(modelId, options)); // hub-cache folders name their snapshot
            var device = DeviceSelector.Resolve(_device);
            var model = _threads is null ? LoadedModel.Load(folder, device) : _threads.Invoke(() => LoadedModel.Load(folder, device));
            _log.LogInformation("Loaded model {ModelId} from {Path} ({MB:0.0} MB) in {Ms} ms", modelId, folder, model.WeightBytes / 1048576.0, started.ElapsedMilliseconds);
            _metrics?.ModelLoaded(modelId, model.Device.type.ToString().ToLowerInvariant(), started.Elapsed);
            lock (_gate)
            {
                var entry = new Entry(model) { LastUsed = ++_clock, Leases = 1 };
                _loaded[modelId] = entry;
                EvictOverBudget(modelId);
                return new ModelLease(this, modelId, entry.Model);
            }
        }
        finally
        {
            loadGate.Release();
        }
    }

    private bool TryLease(string modelId, out ModelLease lease)
    {
        if (_loaded.TryGetValue(modelId, out var e))
        {
            e.Leases++;
            e.LastUsed = ++_clock;
            lease = new ModelLease(this, modelId, e.Model);
            return true;
        }
        lease = null!;
        return false;
    }

    internal void Release(string modelId, LoadedModel model)
    {
        lock (_gate)
        {
            foreach (var (id, e) in _loaded)
                if (ReferenceEquals(e.Model, model)) { e.Leases--; return; }
            // Evicted while leased: the last lease unloads it.
            if (_evictedLeased.TryGetValue(model, out var entry) && --entry.Leases == 0)
            {
                _evictedLeased.Remove(model);
                model.Dispose();
            }
        }
    }

    private readonly Dictionary<LoadedModel, Entry> _evictedLeased = new();

    private void EvictOverBudget(string keep)
    {
        long total = _loaded.Values.Sum(e => e.Model.WeightBytes);
        foreach (var (id, e) in _loaded.OrderBy(p => p.Value.LastUsed).ToList())
        {
            if (total <= _budgetBytes) break;
            if (string.Equals(id, keep, StringComparison.OrdinalIgnoreCase)) continue;
            _loaded.Remove(id);
            total -= e.Model.WeightBytes;
            _log.LogInformation("Unloaded model {ModelId} (memory budget {MB} MB)", id, _budgetBytes / 1048576);
            if (e.Leases == 0) e.Model.Dispose();
            else _evictedLeased[e.Model] = e;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var e in _loaded.Values) e.Model.Dispose();
            _loaded.Clear();
        }
    }
}

/// <summary>A model in use by one batch.</summary>
public sealed class ModelLease(ModelRegistry registry, string modelId, LoadedModel model) : IDisposable
{
    private int _disposed;
    public LoadedModel Model { get; } = model;
    public string ModelId { get; } = modelId;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) registry.Release(ModelId, Model);
    }
}
